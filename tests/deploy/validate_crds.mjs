// Validates custom resources (a JSON list on standard input) with the validators the
// @kubernetes-models packages generate from the CRD OpenAPI schemas of KEDA (ScaledObject,
// TriggerAuthentication) and of the Prometheus operator (ServiceMonitor); prints one line per
// resource, "ok KIND NAME" or "invalid KIND NAME: errors", and exits 1 if any is invalid.
import { readFileSync } from "node:fs";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = { ScaledObject, TriggerAuthentication, ServiceMonitor };
let failed = false;
for (const doc of JSON.parse(readFileSync(0, "utf8"))) {
  const Model = models[doc.kind];
  const label = `${doc.kind} ${doc.metadata?.name}`;
  if (!Model) {
    console.log(`invalid ${label}: not a kind this script knows`);
    failed = true;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`ok ${label}`);
  } catch (err) {
    console.log(`invalid ${label}: ${JSON.stringify(err.errors ?? err.message)}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
