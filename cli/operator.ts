/**
 * `underpass operator`: reconcile TunnelConnections and ApplicationMappings
 * into workers. Flags are validated here once; SIGTERM stops cleanly and
 * hands the leader lease over.
 */
import os from 'node:os';
import type { Command } from 'commander';
import { isIP } from 'node:net';
import { isDns1123Label, parseHostPort } from '../tunnel/address.js';
import { ConfigError } from '../tunnel/errors.js';
import { createLogger } from '../tunnel/log.js';
import { LOG_LEVELS } from '../tunnel/config-load.js';
import { VERSION } from '../tunnel/version.js';
import { parseClusterTargetPolicy, parseOverridePolicy, parseWorkerNetwork, POLICY_DEFAULTS, type PolicyFlags } from './operator-policy-flags.js';

interface OperatorFlags {
  kubeconfig?: string;
  namespace?: string;
  workerImage: string;
  admin: string;
  reportListen?: string;
  reportUrl?: string;
  reportSan?: string[];
  reportService?: string;
  podIp?: string;
  podName?: string;
  podNamespace: string;
  leaseName: string;
  identity?: string;
  logLevel: string;
}

type Flags = OperatorFlags & PolicyFlags;

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

export function registerOperatorCommand(program: Command): void {
  program
    .command('operator')
    .description('run the operator: reconcile TunnelConnection and ApplicationMapping resources into worker Deployments, Services, Secrets and status')
    .option('--kubeconfig <file>', 'kubeconfig file (default: in-cluster service account, then $KUBECONFIG, then ~/.kube/config)')
    .option('--namespace <ns>', 'watch only this namespace (default: all namespaces)')
    .option('--worker-image <image>', 'container image for worker pods (spec.worker.image overrides it only where --worker-image-prefix allows)', `ghcr.io/underpass/underpass:${VERSION}`)
    .option('--admin <host:port>', 'address for /healthz, /readyz (503 with the reason while something is wrong) and /metrics', '0.0.0.0:8080')
    .option('--report-listen <host:port>', 'address of the HTTPS endpoint workers report to (mutual TLS with their connection certificate)')
    .option('--report-url <url>', 'the URL workers use to reach --report-listen, written into their config (e.g. https://underpass-operator.underpass-system.svc:8443)')
    .option('--report-san <name>', 'extra DNS name or IP for the report endpoint certificate (repeatable)', collect)
    .option('--report-service <name>', 'selector-less Service (in --pod-namespace) in front of the replicas: the leader points its EndpointSlice at --pod-ip')
    .option('--pod-ip <ip>', 'this pod\'s IP, for --report-service (default: $POD_IP)', process.env.POD_IP)
    .option('--pod-name <name>', 'this pod\'s name, named in the EndpointSlice (default: $POD_NAME)', process.env.POD_NAME)
    .option('--pod-namespace <ns>', 'namespace of the operator itself: leader Lease and report TLS Secret live here', process.env.POD_NAMESPACE ?? 'underpass-system')
    .option('--lease-name <name>', 'name of the leader-election Lease', 'underpass-operator')
    .option('--identity <id>', 'this replica\'s identity in the Lease (default: the pod/host name)')
    .option('--log-level <level>', `log level (${LOG_LEVELS.join(', ')})`, 'info')
    .option('--cluster-target-namespace <ns>', 'a namespace Cluster-side targets may be in besides the mapping\'s own (repeatable or comma list; * = any namespace, IP or outside name)', collect, [])
    .option('--cluster-target-cidr <cidr>', 'a block Cluster-side targets given as IP addresses may be in (repeatable)', collect, [])
    .option('--cluster-domain <domain>', 'the cluster\'s DNS domain (where Service names end)', POLICY_DEFAULTS.clusterDomain)
    .option('--metrics-namespace-selector <labels>', 'namespaces (key=value,...) whose pods may reach the workers\' admin port besides the operator\'s; "" = none', POLICY_DEFAULTS.metricsNamespaceSelector)
    .option('--no-worker-egress', 'do not restrict worker egress (default: DNS, the report port and the mappings\' Cluster-side targets only)')
    .option('--worker-dns-namespace-selector <labels>', 'namespace of the cluster DNS pods (key=value,...)', POLICY_DEFAULTS.workerDnsNamespaceSelector)
    .option('--worker-dns-pod-selector <labels>', 'labels of the cluster DNS pods (key=value,...; "" with the namespace selector "" = use --worker-dns-cidr only)', POLICY_DEFAULTS.workerDnsPodSelector)
    .option('--worker-dns-cidr <cidr>', 'address block of DNS servers that are not pods (repeatable)', collect, [])
    .option('--worker-dns-port <port>', 'DNS port of the DNS pods (after the Service: 53, 5353 on OpenShift; repeatable)', collect)
    .option('--worker-overrides <fields>', 'spec.worker fields a TunnelConnection may set (comma list of resources, nodeSelector, tolerations; none)', POLICY_DEFAULTS.workerOverrides)
    .option('--worker-image-prefix <prefix>', 'spec.worker.image is honoured when it starts with this (repeatable; * = any image; default: never)', collect, [])
    .addHelpText('after', `
Several replicas may run; one holds the Lease and reconciles, the others wait as standby (/readyz says
which). With --report-service the leader points that Service's EndpointSlice at itself, so worker
reports reach it while every replica is Ready. Start-up problems (a missing namespace, missing CRDs,
RBAC that forbids what it needs) are logged once with the fix, and /readyz answers 503 naming them.

Example (outside a cluster, against a kubeconfig):
  $ underpass operator --kubeconfig ~/.kube/config --admin 127.0.0.1:8080 \\
      --report-listen 0.0.0.0:8443 --report-url https://underpass-operator.underpass-system.svc:8443`)
    .action(async (flags: Flags) => {
      if (!(LOG_LEVELS as readonly string[]).includes(flags.logLevel)) throw new ConfigError(`must be one of ${LOG_LEVELS.join(', ')}`, { field: '--log-level' });
      const clusterTargets = parseClusterTargetPolicy(flags);
      const workerNetwork = parseWorkerNetwork({ ...flags, workerDnsPort: flags.workerDnsPort ?? [...POLICY_DEFAULTS.workerDnsPort] });
      const overrides = parseOverridePolicy(flags);
      const admin = parseHostPort(flags.admin, '--admin');
      if (Boolean(flags.reportListen) !== Boolean(flags.reportUrl)) {
        throw new ConfigError('give both --report-listen and --report-url, or neither', { field: flags.reportListen ? '--report-url' : '--report-listen' });
      }
      let report;
      if (flags.reportListen && flags.reportUrl) {
        let url: URL;
        try {
          url = new URL(flags.reportUrl);
        } catch {
          throw new ConfigError(`"${flags.reportUrl}" is not a URL`, { field: '--report-url' });
        }
        if (url.protocol !== 'https:') throw new ConfigError('must be an https:// URL (workers authenticate with mutual TLS)', { field: '--report-url' });
        report = {
          listen: parseHostPort(flags.reportListen, '--report-listen'), url: url.href.replace(/\/$/, ''),
          secretNamespace: flags.podNamespace, secretName: 'underpass-operator-report-tls', sans: flags.reportSan ?? [],
          ...(flags.reportService ? { endpoint: reportEndpoint(flags.reportService, flags.podIp, flags.podName) } : {}),
        };
      } else if (flags.reportService) {
        throw new ConfigError('only applies with --report-listen and --report-url', { field: '--report-service' });
      }
      const logger = createLogger('operator', { level: flags.logLevel });
      // Loaded here: worker and connector processes never load the Kubernetes client.
      const [{ loadKubeConfig }, { Operator }] = await Promise.all([import('../operator/kube.js'), import('../operator/operator.js')]);
      const operator = new Operator({
        kc: loadKubeConfig(flags.kubeconfig),
        logger,
        ...(flags.namespace ? { namespace: flags.namespace } : {}),
        identity: flags.identity ?? os.hostname(),
        lease: { namespace: flags.podNamespace, name: flags.leaseName },
        workerImage: flags.workerImage,
        admin,
        clusterTargets,
        workerNetwork,
        overrides,
        ...(report ? { report } : {}),
      });
      await operator.start();
      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals): void => {
          logger.info({ signal }, `received ${signal}: stopping (the leader lease is released)`);
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          resolve();
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      await operator.stop();
    });
}

function reportEndpoint(service: string, ip: string | undefined, pod: string | undefined): { service: string; ip: string; pod?: string } {
  if (!isDns1123Label(service)) throw new ConfigError(`"${service}" is not a Service name (a DNS-1123 label)`, { field: '--report-service' });
  if (!ip) throw new ConfigError('is needed with --report-service (set POD_IP from status.podIP, as the chart does)', { field: '--pod-ip' });
  if (isIP(ip) === 0) throw new ConfigError(`"${ip}" is not an IP address`, { field: '--pod-ip' });
  return { service, ip, ...(pod ? { pod } : {}) };
}
