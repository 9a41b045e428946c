// Order of the real-cluster suite (jest.cluster.config.js): the cluster's own smoke test first
// (a broken cluster fails there, with the plainest message), then the rest by name. Fixed, so a
// failure in one run can be replayed in the same order.
const Sequencer = require('@jest/test-sequencer').default;

const FIRST = ['smoke.test.ts'];

class ClusterSequencer extends Sequencer {
  sort(tests) {
    const rank = (t) => {
      const base = t.path.split('/').pop();
      const i = FIRST.indexOf(base);
      return i === -1 ? FIRST.length : i;
    };
    return [...tests].sort((a, b) => rank(a) - rank(b) || a.path.localeCompare(b.path));
  }
}

module.exports = ClusterSequencer;
