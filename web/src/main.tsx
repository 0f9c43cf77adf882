import { render, type ComponentType } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { prefetch } from './api.js';
import { apiKey, forgetApiKey, storeApiKey } from './auth.js';
import { useConnectionState } from './hooks.js';
import { connection } from './live.js';
import { namespaces, useNamespaces } from './namespaces.js';
import { parseRoute, type Route } from './router.js';
import './styles.css';
import type { ViewProps } from './views/view.js';
type ViewModule = { default: ComponentType<ViewProps> };

/** Each view is its own chunk, loaded when first shown: the overview does not pay for the task table. */
const views: Record<Route['view'], () => Promise<ViewModule>> = {
  overview: () => import('./views/overview.js'),
  agents: () => import('./views/agents.js'),
  agent: () => import('./views/agent-detail.js'),
  tasks: () => import('./views/tasks.js'),
  task: () => import('./views/task-detail.js'),
  pipelines: () => import('./views/pipelines.js'),
  run: () => import('./views/run-detail.js'),
  cases: () => import('./views/cases.js'),
  case: () => import('./views/case-detail.js'),
  locks: () => import('./views/locks.js'),
  schedules: () => import('./views/schedules.js'),
  types: () => import('./views/types.js'),
};

/** The nav entry a detail view belongs under. */
const SECTION: Partial<Record<Route['view'], Route['view']>> = { agent: 'agents', task: 'tasks', run: 'pipelines', case: 'cases' };

const STATE_LABEL = {
  connecting: 'connecting…',
  live: 'live',
  polling: 'polling (live stream unavailable)',
  offline: 'disconnected — reconnecting…',
  refused: 'disconnected — sign in',
} as const;

function ConnectionBadge() {
  const state = useConnectionState();
  return (
    <span class={`badge conn-${state}`} data-connection={state} title={state === 'refused' ? connection.refusal : 'connection to fleetd'}>
      <i class="dot" /> {STATE_LABEL[state]}
    </span>
  );
}

/** Which namespace the views show: all the key reaches, or one; only for a key that reaches several. */
function NamespacePicker() {
  const { choices, chosen } = useNamespaces();
  if (choices.length === 0) return null;
  return (
    <select
      class="namespace-picker"
      data-testid="namespace-picker"
      title="namespace"
      value={chosen ?? ''}
      onChange={(e) => namespaces.pick((e.target as HTMLSelectElement).value || null)}
    >
      <option value="">all namespaces</option>
      {choices.map((n) => <option value={n}>{n}</option>)}
    </select>
  );
}

/** Asks for an API key when fleetd refuses the one it has (or none); read scope is enough. */
function SignIn() {
  const submit = (e: Event) => {
    e.preventDefault();
    const key = new FormData(e.target as HTMLFormElement).get('apiKey')?.toString().trim();
    if (!key) return;
    storeApiKey(key);
    connection.restart();
  };
  return (
    <form class="panel sign-in" onSubmit={submit}>
      <h2>Sign in to fleetd</h2>
      <p class="error" data-testid="refusal">{connection.refusal}</p>
      <p class="muted">
        An API key with read scope is enough to watch; cancelling and retrying need submit. It is kept in this browser
        only. <code>npx fleetd keys create --scope read</code> makes one.
      </p>
      <label>
        API key <input name="apiKey" type="password" autocomplete="off" size={50} required />
      </label>{' '}
      <button type="submit">Sign in</button>
    </form>
  );
}

function signOut() {
  forgetApiKey();
  connection.refused('Signed out.');
}

function App() {
  const state = useConnectionState();
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  // Counts navigations: a view is started afresh on each, even to the address it already shows
  // (its filters rewrite the address in place, so the address alone cannot tell).
  const [navigation, setNavigation] = useState(0);
  const [loaded, setLoaded] = useState<{ view: Route['view']; View: ComponentType<ViewProps> } | null>(null);
  const { chosen } = useNamespaces();

  useEffect(() => {
    if (state !== 'refused') void namespaces.load();
  }, [state]);

  useEffect(() => {
    const onHash = () => {
      setRoute(parseRoute(location.hash));
      setNavigation((n) => n + 1);
    };
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    let current = true;
    void views[route.view]().then((m) => current && setLoaded({ view: route.view, View: m.default }));
    return () => {
      current = false;
    };
  }, [route.view]);

  const section = SECTION[route.view] ?? route.view;
  return (
    <>
      <header>
        <a class="brand" href="#/">fleetd</a>
        <nav>
          {(['overview', 'agents', 'tasks', 'types', 'schedules', 'pipelines', 'cases', 'locks'] as const).map((v) => (
            <a href={v === 'overview' ? '#/' : `#/${v}`} class={section === v ? 'active' : ''}>
              {v[0].toUpperCase() + v.slice(1)}
            </a>
          ))}
        </nav>
        {state !== 'refused' && <NamespacePicker />}
        <ConnectionBadge />
        {apiKey() && state !== 'refused' && (
          <button type="button" class="sign-out" onClick={signOut}>Sign out</button>
        )}
      </header>
      <main>
        {state === 'refused' ? (
          <SignIn />
        ) : loaded?.view === route.view ? (
          // Another namespace starts the view afresh, as a navigation does.
          <loaded.View key={`${navigation}:${chosen ?? ''}`} route={route} />
        ) : (
          <p class="muted">Loading…</p>
        )}
      </main>
    </>
  );
}

const first = parseRoute(location.hash);
// The first view's chunk and (for the overview) its data, fetched at once rather than in turn.
void views[first.view]();
if (first.view === 'overview') prefetch('/v1/stats');
connection.start();
render(<App />, document.getElementById('app')!);
