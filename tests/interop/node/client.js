// Node's amqplib as a foreign client for eventworker's interop tests. One JSON command as the
// first argument; the answer is one JSON document on stdout.
//   {"op": "publish", "url": ..., "exchange": ..., "routingKey": ..., "body": <utf-8 text>,
//    "options": <amqplib publish options; {"$bytes": <base64>} becomes a Buffer>}
//     -> {"confirmed": true}
//   {"op": "get", "url": ..., "queue": ..., "count": n, "timeout": seconds}
//     -> [{"body": <base64>, "fields": {...}, "properties": {...}}, ...] (each acked)
'use strict';
const amqp = require('amqplib');

function revive(value) {
  if (Array.isArray(value)) return value.map(revive);
  if (value && typeof value === 'object') {
    if (Object.hasOwn(value, '$bytes')) return Buffer.from(value.$bytes, 'base64');
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, revive(v)]));
  }
  return value;
}

function plain(value) {
  if (Buffer.isBuffer(value)) return { $bytes: value.toString('base64') };
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

async function publish(cmd) {
  const connection = await amqp.connect(cmd.url);
  try {
    const channel = await connection.createConfirmChannel();
    channel.publish(cmd.exchange, cmd.routingKey, Buffer.from(cmd.body, 'utf8'), revive(cmd.options || {}));
    await channel.waitForConfirms();
    await channel.close();
  } finally {
    await connection.close();
  }
  return { confirmed: true };
}

async function get(cmd) {
  const connection = await amqp.connect(cmd.url);
  const taken = [];
  try {
    const channel = await connection.createChannel();
    const deadline = Date.now() + (cmd.timeout || 10) * 1000;
    while (taken.length < cmd.count && Date.now() < deadline) {
      const message = await channel.get(cmd.queue);
      if (message === false) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      channel.ack(message);
      taken.push({
        body: message.content.toString('base64'),
        fields: plain(message.fields),
        properties: plain(message.properties),
      });
    }
    await channel.close();
  } finally {
    await connection.close();
  }
  return taken;
}

const ops = { publish, get };
const cmd = JSON.parse(process.argv[2]);
ops[cmd.op](cmd).then(
  (answer) => process.stdout.write(JSON.stringify(answer)),
  (error) => {
    process.stderr.write(String(error && error.stack ? error.stack : error));
    process.exit(1);
  },
);
