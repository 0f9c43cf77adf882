import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface ChartSeries {
  label: string;
  color: string;
}

/**
 * A live line chart: uPlot is created once and given new data in place, never re-created. The x
 * axis always spans `windowSeconds` up to the newest sample, so that the first samples sit at the
 * right of a full window rather than stretch a few seconds across the chart.
 */
export function Chart(props: { title: string; unit: string; series: ChartSeries[]; data: uPlot.AlignedData; windowSeconds: number }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    const el = box.current!;
    const u = new uPlot(
      {
        width: el.clientWidth || 400,
        height: 180,
        legend: { live: false },
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: true, range: (_u, _min, max) => [(max ?? Date.now() / 1000) - props.windowSeconds, max ?? Date.now() / 1000] },
          y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
        },
        axes: [{ stroke: '#8a94a6' }, { stroke: '#8a94a6', label: props.unit, size: 56 }],
        // Lines that coincide (two rates both at 0) stay visible: each later series is drawn
        // thinner and dashed over the earlier ones, which show through its gaps.
        series: [
          {},
          ...props.series.map((s, i) => ({ label: s.label, stroke: s.color, width: i === 0 ? 3 : 2, dash: i === 0 ? undefined : [8, 6 + 2 * i], points: { show: false } })),
        ],
      },
      props.data,
      el,
    );
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: el.clientWidth, height: 180 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, []);

  useEffect(() => {
    const u = plot.current;
    if (!u) return;
    u.setData(props.data);
    // The span the x axis shows, in seconds, for whoever inspects the page.
    const { min, max } = u.scales.x;
    if (min !== undefined && max !== undefined) box.current!.dataset.xSpanSeconds = String(Math.round(max - min));
  }, [props.data]);

  return (
    <section class="panel chart">
      <h3>{props.title}</h3>
      <div ref={box} />
    </section>
  );
}
