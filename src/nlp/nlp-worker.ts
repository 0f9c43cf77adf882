import winkNLP from 'wink-nlp';
import model from 'wink-eng-lite-web-model';

/**
 * Runs on a piscina worker thread: the model (about 1 s and tens of MB to load) is loaded once per
 * thread, on its first request, and never on the event loop that serves the API.
 */
let nlp: ReturnType<typeof winkNLP> | undefined;
let loadMs = 0;

function load(): ReturnType<typeof winkNLP> {
  if (!nlp) {
    const started = performance.now();
    nlp = winkNLP(model);
    loadMs = performance.now() - started;
  }
  return nlp;
}

const URGENT = new Set(['urgent', 'urgently', 'asap', 'immediately', 'critical', 'emergency', 'now']);
const HIGH = new Set(['important', 'soon', 'high', 'priority', 'quickly']);
const LOW = new Set(['whenever', 'low', 'eventually', 'someday']);

export interface IntakeResult {
  /** The capability the work needs: the first word naming a known capability, else the main verb. */
  type: string;
  priority: number;
  urgency: 'urgent' | 'high' | 'normal' | 'low';
  /** Due date text as written ("before Friday"), and as a time when it can be resolved. */
  due: { text: string; at: string | null } | null;
  entities: { type: string; value: string }[];
  timing: { modelLoadMs: number; parseMs: number };
}

export default function analyse({ text, capabilities, now }: { text: string; capabilities: string[]; now: number }): IntakeResult {
  const n = load();
  const its = n.its;
  const started = performance.now();
  const doc = n.readDoc(text);
  const lemmas = doc.tokens().out(its.lemma as never) as unknown as string[];
  const pos = doc.tokens().out(its.pos) as string[];
  const words = doc.tokens().out(its.normal) as string[];
  const known = new Set(capabilities.map((c) => c.toLowerCase()));
  let type = lemmas.find((l) => known.has(l)) ?? words.find((w) => known.has(w));
  type ??= lemmas.find((l, i) => pos[i] === 'VERB' && !URGENT.has(l)) ?? lemmas.find((_, i) => pos[i] === 'NOUN') ?? 'task';
  const urgency = words.some((w) => URGENT.has(w)) ? 'urgent' : words.some((w) => HIGH.has(w)) ? 'high' : words.some((w) => LOW.has(w)) ? 'low' : 'normal';
  const priority = { urgent: 100, high: 50, normal: 0, low: -10 }[urgency];
  const entities = (doc.entities().out(its.detail as never) as unknown as { value: string; type: string }[]).map((e) => ({ type: e.type, value: e.value }));
  const date = entities.find((e) => e.type === 'DATE' || e.type === 'TIME');
  const due = date ? { text: date.value, at: resolveDate(date.value, now) } : null;
  return { type, priority, urgency, due, entities, timing: { modelLoadMs: Math.round(loadMs), parseMs: Math.round((performance.now() - started) * 100) / 100 } };
}

const DAYS = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'];

/** A weekday means its next occurrence (end of that day, UTC); a full date is parsed; anything else stays unresolved. */
function resolveDate(value: string, now: number): string | null {
  const lower = value.toLowerCase();
  const day = DAYS.findIndex((d) => lower.includes(d));
  if (day >= 0) {
    const d = new Date(now);
    const ahead = (day - d.getUTCDay() + 7) % 7 || 7;
    d.setUTCDate(d.getUTCDate() + ahead);
    d.setUTCHours(23, 59, 59, 0);
    return d.toISOString();
  }
  if (lower.includes('tomorrow')) return new Date(now + 86_400_000).toISOString();
  const parsed = Date.parse(value);
  return Number.isFinite(parsed) ? new Date(parsed).toISOString() : null;
}
