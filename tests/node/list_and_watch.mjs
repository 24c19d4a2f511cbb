// Lists the nodes of a p2pkube cluster and watches its ConfigMaps through the official
// JavaScript client (@kubernetes/client-node), configured from a kubeconfig only.
// Prints one JSON line with the nodes and the list's resourceVersion, then one JSON line per
// ConfigMap event ({"type", "name"}) until it is killed.
import * as k8s from "@kubernetes/client-node";

const kubeconfig = new k8s.KubeConfig();
kubeconfig.loadFromFile(process.argv[2]);
const core = kubeconfig.makeApiClient(k8s.CoreV1Api);

const nodes = await core.listNode();
const maps = await core.listNamespacedConfigMap({ namespace: "default" });
console.log(
  JSON.stringify({
    nodes: nodes.items.map((n) => n.metadata.name),
    resourceVersion: maps.metadata.resourceVersion,
  }),
);

const watcher = new k8s.Watch(kubeconfig);
await watcher.watch(
  "/api/v1/namespaces/default/configmaps",
  { resourceVersion: maps.metadata.resourceVersion },
  (type, obj) => console.log(JSON.stringify({ type, name: obj.metadata.name })),
  (err) => {
    if (err) {
      console.error(`Error: ${err}`);
      process.exit(1);
    }
  },
);
