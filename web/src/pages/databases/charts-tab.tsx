import { useEffect, useRef, useState } from 'react';
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
function Chart(props: { label: string; xs: number[]; ys: number[]; format: (v: number) => string }) {
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
        scales: { x: { time: true } },
        axes: [{}, { values: (_u, vals) => vals.map((v) => props.format(v)), size: 70 }],
        series: [{}, { label: props.label, stroke: '#2563eb', fill: 'rgba(37, 99, 235, 0.12)', width: 2 }],
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
  }, [props.xs, props.ys, props.label, props.format]);
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

export default function ChartsTab({ db }: TabProps) {
  const name = db.name;
  const [win, setWin] = useState<Window>('24h');
  const samples = useApi(
    () =>
      call(api.GET('/v1/databases/{name}/samples', { params: { path: { name }, query: { window: win } } })),
    `${name}|${win}`,
  );
  const points = samples.data?.points ?? [];
  const xs = points.map((p) => Date.parse(p.at) / 1000);
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
          <Chart label="Size" xs={xs} ys={points.map((p) => p.size_bytes)} format={bytes} />
          <Chart label="Connections" xs={xs} ys={points.map((p) => p.connections)} format={count} />
        </div>
      ) : null}
    </section>
  );
}
