/**
 * The agent side of `npm run bench -- ws`, in its own process: N agents that complete each task the
 * moment it arrives — over the agent stream (`ws`: credit granted back per task) or, as the
 * baseline, by HTTP long-poll claims (`poll`) — and M observer sockets on the `stats` topic. It
 * measures submit-to-agent dispatch latency from the submit time carried in each payload (same
 * machine, same clock) and reports over IPC.
 */
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

// The server's URL, or several nodes' URLs separated by commas: agents and observers take turns among them.
const [urlsArg, agentsFile, observersArg, creditArg, transport, adminKey] = process.argv.slice(2);
const urls = urlsArg.split(',');
const auth = { authorization: `Bearer ${adminKey}` };
const agents = JSON.parse(readFileSync(agentsFile, 'utf8')) as { id: string; token: string }[];
const observers = Number(observersArg);
const credit = Number(creditArg);
const nodeOf = (i: number) => urls[i % urls.length];
const now = () => performance.timeOrigin + performance.now();

const dispatch: number[] = [];
const observed: number[] = [];
let completed = 0;
let measuring = false;
let stopped = false;
const sockets: WebSocket[] = [];

async function post(url: string, path: string, body: unknown): Promise<any> {
  const res = await fetch(url + path, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return res.json();
}

/** The baseline: an agent that long-polls for up to `credit` tasks and completes them over HTTP. */
async function pollAgent(agent: { id: string }, url: string): Promise<void> {
  while (!stopped) {
    try {
      const { tasks } = await post(url, '/v1/tasks/claim', { agentId: agent.id, max: credit, waitMs: 20_000 });
      const at = now();
      for (const task of tasks) if (measuring) dispatch.push(at - task.payload.t);
      await Promise.all(tasks.map((task: { id: number }) => post(url, `/v1/tasks/${task.id}/complete`, { agentId: agent.id })));
      completed += tasks.length;
    } catch {
      if (!stopped) await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function openAgent(agent: { id: string; token: string }, url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/agents/${agent.id}/stream`, {
      headers: { authorization: `Bearer ${agent.token}` },
      perMessageDeflate: false,
    });
    sockets.push(socket);
    socket.on('error', reject);
    socket.on('message', (data) => {
      const message = JSON.parse(data.toString());
      if (message.type === 'welcome') {
        socket.send(JSON.stringify({ type: 'credit', add: credit }));
        resolve();
      } else if (message.type === 'tasks') {
        const at = now();
        for (const task of message.tasks) {
          if (measuring) dispatch.push(at - task.payload.t);
          socket.send(JSON.stringify({ type: 'complete', id: task.id }));
        }
        completed += message.tasks.length;
        socket.send(JSON.stringify({ type: 'credit', add: message.tasks.length }));
      }
    });
  });
}

function openObserver(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/events`, { headers: auth });
    sockets.push(socket);
    socket.on('error', reject);
    socket.once('open', () => socket.send(JSON.stringify({ type: 'subscribe', topics: ['stats'] })));
    socket.on('message', (data) => {
      const message = JSON.parse(data.toString());
      if (message.type === 'subscribed') resolve();
      else if (message.type === 'events' && measuring) {
        const at = Date.now();
        for (const event of message.events) observed.push(at - Date.parse(event.at));
      }
    });
  });
}

// Open sockets a few hundred at a time: a burst of 10,000 handshakes would only measure the backlog.
if (transport === 'poll') agents.forEach((agent, i) => void pollAgent(agent, nodeOf(i)));
else for (let i = 0; i < agents.length; i += 250) await Promise.all(agents.slice(i, i + 250).map((agent, j) => openAgent(agent, nodeOf(i + j))));
for (let i = 0; i < observers; i += 250) await Promise.all(Array.from({ length: Math.min(250, observers - i) }, (_, j) => openObserver(nodeOf(i + j))));
process.send!({ type: 'ready', sockets: sockets.length, agents: agents.length });

process.on('message', (message: { type: string }) => {
  if (message.type === 'measure') measuring = true;
  if (message.type === 'completed') process.send!({ type: 'completed', completed });
  if (message.type === 'finish') {
    measuring = false;
    stopped = true;
    process.send!({ type: 'results', dispatch, observed, completed, open: sockets.filter((s) => s.readyState === WebSocket.OPEN).length });
    for (const socket of sockets) socket.terminate();
    setTimeout(() => process.exit(0), 100);
  }
});
