import { useEffect, useRef } from 'react';
import { CopyButton } from '../../components/copy-button.tsx';

/** A webhook's signing secret, shown this once (Bulwark cannot show it again), with a copy button. */
export function SecretOnce({ secret, title, onDone }: { secret: string; title: string; onDone: () => void }) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => heading.current?.focus(), []);
  return (
    <section className="card" aria-labelledby="secret-once-h">
      <h2 id="secret-once-h" ref={heading} tabIndex={-1}>
        {title}
      </h2>
      <p>
        Copy it now: this is the only time it is shown. Your receiver checks each delivery's{' '}
        <code>Bulwark-Signature</code> with it.
      </p>
      <div className="field-row">
        <label className="grow">
          <span>Signing secret</span>
          <input readOnly className="mono" value={secret} onFocus={(e) => e.target.select()} />
        </label>
        <CopyButton text={secret} label="Copy secret" />
      </div>
      <button type="button" className="primary" onClick={onDone}>
        Done
      </button>
    </section>
  );
}
