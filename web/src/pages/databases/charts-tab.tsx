import { useEffect, useMemo, useRef, useState } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api, call } from '../../api/client.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading } from '../../components/page.tsx';
import { bytes } from '../../lib/format.ts';
import { useApi } from '../../lib/use-api.ts';
import type { TabProps } from './detail.tsx';
import './charts.css';

type Window = '1h' | '24h' | '7d';
const WINDOWS: [Window, string][] = [
  ['1h', '1 hour'],
  ['24h', '24 hours'],
  ['7d', '7 days'],
];

/** One series over time; the canvas is an img with a label, the latest value is text beside it. */
function Chart(props: {
  label: string;
  xs: number[];
  ys: number[];
  /** The window shown, in seconds since the epoch (the x axis spans it even with few points). */
  range: [number, number];
  format: (v: number) => string;
  /** Tick steps (counts: whole numbers only). */
  incrs?: number[];
}) {
  const host = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const width = Math.max(280, Math.min(el.clientWidth || 600, 1100));
    const plot = new uPlot(
      {
        width,
        height: 220,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: true, range: () => props.range },
          y: { range: (_u, _min, max) => [0, Math.max(max * 1.15, props.incrs ? 2 : 1)] },
        },
        axes: [
          {},
          {
            values: (_u, vals) => vals.map((v) => props.format(v)),
            size: 70,
            ...(props.incrs ? { incrs: props.incrs } : {}),
          },
        ],
        series: [
          {},
          {
            label: props.label,
            stroke: '#2563eb',
            fill: 'rgba(37, 99, 235, 0.12)',
            width: 2,
            points: { show: props.xs.length < 60 },
          },
        ],
      },
      [props.xs, props.ys],
      el,
    );
    const resize = () => plot.setSize({ width: Math.max(280, Math.min(el.clientWidth, 1100)), height: 220 });
    window.addEventListener('resize', resize);
    return () => {
      window.removeEventListener('resize', resize);
      plot.destroy();
    };
  }, [props.xs, props.ys, props.label, props.format, props.range, props.incrs]);
  const last = props.ys[props.ys.length - 1];
  return (
    <figure className="chart">
      <figcaption>
        {props.label}
        {last !== undefined ? <span className="muted"> — latest {props.format(last)}</span> : null}
      </figcaption>
      <div ref={host} role="img" aria-label={`${props.label} over time`} />
    </figure>
  );
}

const count = (v: number) => String(Math.round(v));
const COUNT_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
const WINDOW_S: Record<Window, number> = { '1h': 3600, '24h': 86400, '7d': 604800 };

export default function ChartsTab({ db }: TabProps) {
  const name = db.name;
  const [win, setWin] = useState<Window>('24h');
  const samples = useApi(
    () =>
      call(api.GET('/v1/databases/{name}/samples', { params: { path: { name }, query: { window: win } } })),
    `${name}|${win}`,
  );
  const points = samples.data?.points ?? [];
  const xs = useMemo(() => points.map((p) => Date.parse(p.at) / 1000), [points]);
  const sizes = useMemo(() => points.map((p) => p.size_bytes), [points]);
  const conns = useMemo(() => points.map((p) => p.connections), [points]);
  // biome-ignore lint/correctness/useExhaustiveDependencies: the window ends when the samples were read
  const range = useMemo<[number, number]>(() => {
    const to = Date.now() / 1000;
    return [to - WINDOW_S[win], to];
  }, [win, samples.data]);
  return (
    <section aria-labelledby="tab-h">
      <h2 id="tab-h">Charts</h2>
      <label className="inline">
        <span>Time window</span>
        <select value={win} onChange={(e) => setWin(e.target.value as Window)}>
          {WINDOWS.map(([v, l]) => (
            <option key={v} value={v}>
              {l}
            </option>
          ))}
        </select>
      </label>
      <ErrorNotice error={samples.error} title="Could not read the samples" />
      {!samples.data && samples.loading ? <Loading what="samples" /> : null}
      {samples.data && points.length === 0 ? (
        <Empty>
          <p>
            No samples yet. The node's agent samples size and connections every minute; come back shortly, or
            choose a longer window.
          </p>
        </Empty>
      ) : null}
      {points.length > 0 ? (
        <div className="charts">
          <Chart label="Size" xs={xs} ys={sizes} range={range} format={bytes} />
          <Chart label="Connections" xs={xs} ys={conns} range={range} format={count} incrs={COUNT_STEPS} />
        </div>
      ) : null}
    </section>
  );
}
