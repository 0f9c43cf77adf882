/** What templates can see: the run's input and the outputs of completed steps, by name. */
export interface TemplateScope {
  input: unknown;
  steps: Record<string, unknown>;
  run: { id: number; namespace: string; pipeline: string };
}

const PLACEHOLDER = /\{\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*\}\}/g;
const ONLY_PLACEHOLDER = /^\{\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*\}\}$/;

/** The paths a template refers to, e.g. ["input.text", "steps.extract"]. */
export function placeholders(value: unknown): string[] {
  const found: string[] = [];
  visitStrings(value, (s) => {
    for (const m of s.matchAll(PLACEHOLDER)) found.push(m[1]);
  });
  return found;
}

/**
 * Fills a template: strings have their placeholders replaced (objects as JSON), objects and arrays
 * are filled field by field. A string that is exactly one placeholder becomes the value itself.
 */
export function render(value: unknown, scope: TemplateScope): unknown {
  if (typeof value === 'string') {
    const only = ONLY_PLACEHOLDER.exec(value);
    if (only) return lookup(scope, only[1]) ?? null;
    return value.replace(PLACEHOLDER, (_, path: string) => {
      const v = lookup(scope, path);
      return v === undefined || v === null ? '' : typeof v === 'string' ? v : JSON.stringify(v);
    });
  }
  if (Array.isArray(value)) return value.map((v) => render(v, scope));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, render(v, scope)]));
  }
  return value;
}

export function renderText(value: string, scope: TemplateScope): string {
  const v = render(value, scope);
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function lookup(scope: TemplateScope, path: string): unknown {
  let v: unknown = scope;
  for (const key of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

function visitStrings(value: unknown, visit: (s: string) => void): void {
  if (typeof value === 'string') visit(value);
  else if (Array.isArray(value)) for (const v of value) visitStrings(v, visit);
  else if (value !== null && typeof value === 'object') for (const v of Object.values(value)) visitStrings(v, visit);
}
