// Validates Prometheus Operator resources against the operator's own CRD schemas, as packaged
// by @kubernetes-models/prometheus-operator (for .ci/interop/kubernetes.sh; kubernetes-validate
// knows only the built-in kinds).
//
//   node check_podmonitor.mjs NODE_MODULES RESOURCES.json
//
// RESOURCES.json: [{"file": ..., "resource": {...}}, ...]. First a canary: a PodMonitor with a
// malformed interval must be refused, or the validator is not validating. Exits 1 naming each
// failure.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, input] = process.argv.slice(2);
const models = join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");
const kinds = {};
for (const kind of ["PodMonitor", "ServiceMonitor"]) {
  kinds[kind] = (await import(pathToFileURL(join(models, `${kind}.js`)).href))[kind];
}

let failures = 0;
const canary = {
  metadata: { name: "canary" },
  spec: { selector: { matchLabels: { a: "b" } }, podMetricsEndpoints: [{ port: "http", interval: "thirty" }] },
};
try {
  new kinds.PodMonitor(canary).validate();
  console.log("FAIL canary: a PodMonitor with interval \"thirty\" was accepted; the validator does not validate");
  failures++;
} catch {
  // Refused, as it must be.
}

const resources = JSON.parse(readFileSync(input, "utf8"));
for (const { file, resource } of resources) {
  const where = `${file} ${resource.kind}/${resource.metadata.name}`;
  const Model = kinds[resource.kind];
  if (resource.apiVersion !== "monitoring.coreos.com/v1" || !Model) {
    console.log(`FAIL ${where}: no schema for ${resource.apiVersion} ${resource.kind}`);
    failures++;
    continue;
  }
  try {
    new Model(resource).validate();
  } catch (e) {
    console.log(`FAIL ${where}: ${e.message}`);
    failures++;
  }
}
console.log(`prometheus-operator schemas: ${resources.length} resources, ${failures} failed`);
process.exit(failures ? 1 : 0);
