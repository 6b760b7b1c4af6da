import type { EventType } from './webhooks-api.ts';

/**
 * The events a webhook subscribes to, grouped by area: every event ("*"), a whole area
 * ("area.*", later events of the area included) or single types.
 */
export function EventPicker({
  types,
  value,
  onChange,
  invalid,
}: {
  types: EventType[];
  value: string[];
  onChange: (v: string[]) => void;
  invalid: boolean;
}) {
  const areas = [...new Set(types.map((t) => t.area))].sort();
  const has = (e: string) => value.includes(e);
  const toggle = (e: string, on: boolean) =>
    onChange(on ? [...value.filter((v) => v !== e), e] : value.filter((v) => v !== e));
  const all = has('*');
  return (
    <fieldset aria-describedby="events-hint" aria-invalid={invalid}>
      <legend>Events</legend>
      <label className="inline">
        <input type="checkbox" checked={all} onChange={(e) => onChange(e.target.checked ? ['*'] : [])} />
        <span>Every event (*)</span>
      </label>
      {areas.map((area) => {
        const wildcard = `${area}.*`;
        const whole = all || has(wildcard);
        return (
          <fieldset key={area} className="event-area">
            <legend>{area}</legend>
            <label className="inline">
              <input
                type="checkbox"
                disabled={all}
                checked={whole}
                onChange={(e) =>
                  onChange(
                    e.target.checked
                      ? [...value.filter((v) => !v.startsWith(`${area}.`)), wildcard]
                      : value.filter((v) => v !== wildcard),
                  )
                }
              />
              <span>
                All of {area} (<code>{wildcard}</code>)
              </span>
            </label>
            {types
              .filter((t) => t.area === area)
              .map((t) => (
                <label key={t.type} className="inline">
                  <input
                    type="checkbox"
                    disabled={whole}
                    checked={whole || has(t.type)}
                    onChange={(e) => toggle(t.type, e.target.checked)}
                  />
                  <span>
                    <code>{t.type}</code> <span className="muted small">{t.description}</span>
                  </span>
                </label>
              ))}
          </fieldset>
        );
      })}
      <span id="events-hint" className={invalid ? 'hint hint-bad' : 'hint'}>
        {invalid ? 'Choose at least one event' : `${value.length ? value.join(', ') : 'None chosen yet'}`}
      </span>
    </fieldset>
  );
}
