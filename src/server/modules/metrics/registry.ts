/**
 * A small Prometheus registry (text exposition format 0.0.4), hand-written: counters that code
 * increments, and collectors that read current values (queue depth, heartbeat age…) at scrape time.
 *
 *   const authFailures = metrics.counter('bulwark_auth_failures_total', 'Refused API keys', ['reason']);
 *   authFailures.inc({ reason: 'unknown_key' });
 *
 * Label values must come from a small, fixed set (route patterns, status codes, reasons): never a
 * raw URL, a key or anything a client chooses freely.
 */

export type Labels = Record<string, string>;

export type Counter = { inc(labels?: Labels, by?: number): void };

/** One sample line: name (optionally suffixed), labels, value. */
export type Sample = { labels?: Labels; value: number };

export type GaugeFamily = { name: string; help: string; type: 'gauge' | 'counter'; samples: Sample[] };

/** Runs at scrape time; returns current values. A collector that throws is skipped (logged by the route). */
export type Collector = () => Promise<GaugeFamily[]>;

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/** Series per counter: bounds memory if a label value ever turns out to be unbounded. */
const MAX_SERIES = 2_000;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatLabels(labels: Labels | undefined): string {
  if (!labels) return '';
  const keys = Object.keys(labels);
  if (keys.length === 0) return '';
  return `{${keys.map((k) => `${k}="${escapeLabel(labels[k] ?? '')}"`).join(',')}}`;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function formatFamily(f: GaugeFamily): string {
  let out = `# HELP ${f.name} ${escapeHelp(f.help)}\n# TYPE ${f.name} ${f.type}\n`;
  for (const s of f.samples) out += `${f.name}${formatLabels(s.labels)} ${formatValue(s.value)}\n`;
  return out;
}

export type MetricsRegistry = {
  /** Returns the same counter when called again with the same name (labels must match). */
  counter(name: string, help: string, labelNames?: readonly string[]): Counter;
  /** Adds a scrape-time collector. */
  collect(collector: Collector): void;
  /** The whole exposition text; `onError` hears about collectors that failed. */
  render(onError?: (err: unknown) => void): Promise<string>;
};

type CounterState = { help: string; labelNames: readonly string[]; series: Map<string, Sample> };

export function createMetricsRegistry(): MetricsRegistry {
  const counters = new Map<string, CounterState>();
  const collectors: Collector[] = [];

  return {
    counter(name, help, labelNames = []) {
      if (!NAME.test(name)) throw new Error(`metric name ${name} is not valid`);
      for (const l of labelNames) if (!LABEL.test(l)) throw new Error(`label name ${l} is not valid`);
      let state = counters.get(name);
      if (!state) {
        state = { help, labelNames: [...labelNames], series: new Map() };
        counters.set(name, state);
      } else if (state.labelNames.join(',') !== labelNames.join(',')) {
        throw new Error(`metric ${name} already registered with labels ${state.labelNames.join(',')}`);
      }
      const s = state;
      return {
        inc(labels = {}, by = 1) {
          if (!(by >= 0)) return;
          const picked: Labels = {};
          for (const l of s.labelNames) picked[l] = labels[l] ?? '';
          const key = s.labelNames.map((l) => picked[l]).join('\u0000');
          const cur = s.series.get(key);
          if (cur) cur.value += by;
          else if (s.series.size < MAX_SERIES) s.series.set(key, { labels: picked, value: by });
        },
      };
    },
    collect(collector) {
      collectors.push(collector);
    },
    async render(onError) {
      let out = '';
      for (const [name, s] of counters) {
        out += formatFamily({ name, help: s.help, type: 'counter', samples: [...s.series.values()] });
      }
      const results = await Promise.allSettled(collectors.map((c) => c()));
      for (const r of results) {
        if (r.status === 'rejected') {
          onError?.(r.reason);
          continue;
        }
        for (const f of r.value) out += formatFamily(f);
      }
      return out;
    },
  };
}
