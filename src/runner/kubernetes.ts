// A contribution as a Kubernetes Pod: the same launch `render()` turns into argv, as an object for
// `kubectl apply`. Socket mode mounts the key's directory from the node (the gateway runs there as a
// DaemonSet, its state dir at the same path on the node and in its pod); TCP mode mounts nothing and
// leaves the path to the gateway to a NetworkPolicy (deploy/k8s/, docs/kubernetes.md).
import type { Contribution, Mount } from './contribute.ts';
import { checkSpec, command, type LaunchSpec, WORKSPACE } from './launch-spec.ts';

/** The label every agent pod carries (the key's id): what deploy/k8s/'s NetworkPolicies select. */
export const AGENT_LABEL = 'llm-gateway.key';

/** The parts of a v1 Pod this renderer emits (the full schema is Kubernetes'; tests check against it). */
export interface PodManifest {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: { name: string; namespace?: string; labels: Record<string, string>; annotations: Record<string, string> };
  spec: {
    restartPolicy: 'Never';
    nodeName?: string;
    automountServiceAccountToken: false;
    enableServiceLinks: false;
    securityContext: {
      seccompProfile: { type: 'RuntimeDefault' };
      runAsUser?: number;
      runAsGroup?: number;
      runAsNonRoot?: boolean;
    };
    containers: [PodContainer];
    volumes?: PodVolume[];
  };
}

interface PodContainer {
  name: string;
  image: string;
  args?: string[];
  env: { name: string; value: string }[];
  workingDir?: string;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  securityContext: { allowPrivilegeEscalation: false; capabilities: { drop: ['ALL'] } };
}

type PodVolume = { name: string; hostPath: { path: string; type?: 'Directory' } } | { name: string; emptyDir: Record<string, never> };

export interface PodOptions {
  /** Default the spec's name, else `llm-agent-<key id>`. */
  name?: string;
  namespace?: string;
  /** The node whose gateway minted the key: in socket mode its directory exists there and nowhere else. */
  nodeName?: string;
}

// Kubernetes' own rules: a label value (and a label name without prefix), a DNS-1123 label (namespace)
// and subdomain (pod and node names).
const LABEL_VALUE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/;
const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/;
const NUMERIC_USER = /^(\d+)(?::(\d+))?$/;

function refuse(what: string, value: string, rule: string): never {
  throw new TypeError(`${what} ${JSON.stringify(value)} ${rule}`);
}

/** Kubernetes runs a container as numbers only: `uid[:gid]` gives the pod's user (gid defaults to uid, as the key's owner does). */
function runAs(user: string | undefined): Pick<PodManifest['spec']['securityContext'], 'runAsUser' | 'runAsGroup' | 'runAsNonRoot'> {
  if (user === undefined) return {};
  const match = NUMERIC_USER.exec(user);
  if (!match) refuse('user', user, 'must be a numeric uid[:gid] for Kubernetes');
  const uid = Number(match[1]);
  return { runAsUser: uid, runAsGroup: match[2] === undefined ? uid : Number(match[2]), runAsNonRoot: uid !== 0 };
}

/**
 * The Pod for one launch; a TypeError for a value Kubernetes (or a runtime, `checkSpec`) would refuse.
 * `spec.workdir` is a host directory and means nothing on a cluster node: the pod gets an empty
 * /workspace instead (clone or copy into it). The command goes in `args`, as `podman run IMAGE CMD`
 * does: the image's entrypoint stays (with `shim: false` it is what starts the shim).
 */
export function renderPod(contribution: Contribution, spec: LaunchSpec, options: PodOptions = {}): PodManifest {
  checkSpec(contribution, spec);
  if (!spec.image) throw new TypeError('a pod needs an image');
  if (spec.extraArgs?.length) throw new TypeError("extraArgs are a runtime's flags: a pod has none (edit the manifest instead)");
  const name = options.name ?? spec.name ?? `llm-agent-${contribution.key.id}`;
  if (!DNS_SUBDOMAIN.test(name)) refuse('pod name', name, 'must be a DNS subdomain (lowercase a-z, 0-9, "-" and ".")');
  if (options.namespace !== undefined && !DNS_LABEL.test(options.namespace))
    refuse('namespace', options.namespace, 'must be a DNS label (lowercase a-z, 0-9, "-")');
  if (options.nodeName !== undefined && !DNS_SUBDOMAIN.test(options.nodeName)) refuse('node name', options.nodeName, 'must be a DNS subdomain');
  if (!LABEL_VALUE.test(contribution.key.id)) refuse('key id', contribution.key.id, 'is not a Kubernetes label value');

  // Labels are for selection and must fit Kubernetes' rules; annotations keep every value exactly.
  const labels = Object.fromEntries(Object.entries(contribution.labels).filter(([, value]) => LABEL_VALUE.test(value)));
  const volumes: PodVolume[] = [];
  const volumeMounts: NonNullable<PodContainer['volumeMounts']> = [];
  const hostPath = (prefix: string, mounts: Mount[], type?: 'Directory') =>
    mounts.forEach((mount, i) => {
      volumes.push({ name: `${prefix}-${i}`, hostPath: { path: mount.source, ...(type ? { type } : {}) } });
      volumeMounts.push({ name: `${prefix}-${i}`, mountPath: mount.target, readOnly: mount.readOnly });
    });
  // Socket mode: the key's directory on the node, which must already exist (the key was minted there).
  // TCP mode has no mounts: the gateway is reached over the pod network.
  hostPath('gateway-key', contribution.mounts, 'Directory');
  hostPath('mount', spec.mounts ?? []);
  if (spec.workdir) {
    volumes.push({ name: 'workspace', emptyDir: {} });
    volumeMounts.push({ name: 'workspace', mountPath: WORKSPACE });
  }
  const args = command(contribution, spec);

  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      ...(options.namespace ? { namespace: options.namespace } : {}),
      labels: { ...labels, [AGENT_LABEL]: contribution.key.id },
      annotations: { ...contribution.labels },
    },
    spec: {
      restartPolicy: 'Never',
      ...(options.nodeName ? { nodeName: options.nodeName } : {}),
      // No API token and no service env vars: the agent learns nothing of the cluster.
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      securityContext: { seccompProfile: { type: 'RuntimeDefault' }, ...runAs(spec.user) },
      containers: [
        {
          name: 'agent',
          image: spec.image,
          ...(args.length > 0 ? { args } : {}),
          env: Object.entries({ ...spec.env, ...contribution.env }).map(([envName, value]) => ({ name: envName, value })),
          ...(spec.workdir ? { workingDir: WORKSPACE } : {}),
          ...(volumeMounts.length > 0 ? { volumeMounts } : {}),
          securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
        },
      ],
      ...(volumes.length > 0 ? { volumes } : {}),
    },
  };
}
