/** Every fuzz target, in the order of the `make fuzz` table. */
import type { FuzzTarget } from '../harness.js';
import { allowRuleTarget } from './allow-rule.js';
import { configTarget } from './config.js';
import { controlTarget } from './control.js';
import { operatorReportTarget } from './operator-report.js';
import { identityTarget } from './identity.js';
import { openHeaderTarget } from './open-header.js';
import { valuesTarget } from './values.js';
import { wsFrameTarget } from './ws-frame.js';
import { wsUpgradeTarget } from './ws-upgrade.js';
import { yamuxFrameTarget } from './yamux-frame.js';
import { yamuxSessionTarget } from './yamux-session.js';

export const TARGETS: readonly FuzzTarget[] = [
  yamuxFrameTarget,
  yamuxSessionTarget,
  wsFrameTarget,
  wsUpgradeTarget,
  openHeaderTarget,
  controlTarget,
  operatorReportTarget,
  configTarget,
  allowRuleTarget,
  valuesTarget,
  identityTarget,
];
