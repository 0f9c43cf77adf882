import { useEffect, useState } from 'preact/hooks';
import { api, get } from '../api.js';
import { ago, time } from '../format.js';
import type { PipelineRun, StepState } from '../types.js';

/**
 * A waiting approval step: what it asks, until when, and — to a key that may decide it — Approve
 * and Reject with an optional comment. Whether this key may is the server's answer, not a guess.
 */
export function ApprovalPanel({ runId, step, onDecided }: { runId: number; step: StepState; onDecided: (run: PipelineRun) => void }) {
  const [mayDecide, setMayDecide] = useState<boolean | null>(null);
  const [comment, setComment] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const path = `/v1/pipelines/runs/${runId}/steps/${encodeURIComponent(step.name)}`;

  useEffect(() => {
    let current = true;
    get<{ waiting: boolean; mayDecide: boolean }>(`${path}/approval`).then(
      (answer) => current && setMayDecide(answer.mayDecide),
      () => current && setMayDecide(false),
    );
    return () => {
      current = false;
    };
  }, [path]);

  const decide = async (verb: 'approve' | 'reject') => {
    setBusy(true);
    try {
      onDecided((await api<{ run: PipelineRun }>('POST', `${path}/${verb}`, comment ? { comment } : {})).run);
      setError('');
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  const approval = step.approval;
  const approvers = approval?.approvers ? [...(approval.approvers.keys ?? []).map((k) => `key ${k}`), ...(approval.approvers.agents ?? []).map((a) => `agent ${a}`)] : [];
  return (
    <section class="panel" data-approval={step.name} data-may-decide={mayDecide === null ? 'unknown' : String(mayDecide)}>
      <h3>
        Waiting for approval: <span class="mono">{step.name}</span>
      </h3>
      {approval && (
        <>
          <p data-testid="approval-prompt">{approval.prompt}</p>
          <p class="muted small">
            decides itself ({approval.onTimeout === 'approve' ? 'approved' : 'rejected'}) <span title={time(approval.decideBy)}>{ago(approval.decideBy)}</span>
            {approvers.length > 0 ? `; may be decided by ${approvers.join(', ')} and admin keys` : '; any submit key may decide'}
          </p>
        </>
      )}
      {mayDecide === true && (
        <>
          <textarea name="comment" rows={2} maxLength={2000} placeholder="Comment (optional)" value={comment} onInput={(e) => setComment((e.target as HTMLTextAreaElement).value)} />
          <div class="actions">
            <button disabled={busy} data-decide="approve" onClick={() => decide('approve')}>Approve</button>
            <button class="danger" disabled={busy} data-decide="reject" onClick={() => decide('reject')}>Reject</button>
          </div>
        </>
      )}
      {mayDecide === false && <p class="muted">This key may not decide this step.</p>}
      {error && <p class="error">{error}</p>}
    </section>
  );
}
