/**
 * Writes the SDKs' wire types from the server's wire contract, so that neither SDK restates it by
 * hand: packages/client/src/wire.ts (TypeScript) and clients/python/fleetd/wire.py (Python).
 *
 *   node --import tsx scripts/gen-client-wire.ts          rewrites both files
 *   node --import tsx scripts/gen-client-wire.ts --check  exits 1 when a committed file is stale
 *
 * Types come from the TypeBox schemas (JSON Schema at run time); the few message types that exist
 * only as TypeScript declarations are copied from their source file by name. The SOURCES below are
 * the only places this script knows about.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TSchema } from '@sinclair/typebox';
import { ErrorCodes } from '../src/domain/errors.js';
import { AgentMessageSchema, AGENT_PROTOCOL_VERSION, ServerMessageSchema, TaskBatchItemSchema, TaskBatchResultSchema } from '../src/protocol/agent-stream.js';
import { ActivityEntrySchema, AgentSchema, ErrorSchema, ScheduleSchema, StatsSchema, TaskActivitySchema, TaskSchema, TaskStatusSchema, TaskSummarySchema } from '../src/domain/wire.js';
import { EventDataSchemas, ObserverMessageSchema } from '../src/protocol/events.js';
import { AgentInputSchema, ScheduleInputSchema, TaskInputSchema } from '../src/server/schemas.js';
import { DEFAULT_NAMESPACE, NAMESPACE_PATTERN } from '../src/domain/namespaces.js';
import { NAMESPACE_HEADER } from '../src/server/namespaces.js';

const root = join(import.meta.dirname, '..');

/** Named schemas, in the order they are written. */
const SCHEMAS: [name: string, schema: TSchema][] = [
  ['TaskStatus', TaskStatusSchema],
  ['TaskJson', TaskSchema],
  ['TaskSummaryJson', TaskSummarySchema],
  ['TaskInput', TaskInputSchema],
  ['AgentJson', AgentSchema],
  ['AgentInput', AgentInputSchema],
  ['ErrorJson', ErrorSchema],
  ['StatsJson', StatsSchema],
  ['TaskBatchItem', TaskBatchItemSchema],
  ['TaskBatchResult', TaskBatchResultSchema],
  ['ScheduleJson', ScheduleSchema],
  ['ScheduleInput', ScheduleInputSchema],
  ['AgentMessage', AgentMessageSchema],
  ['ServerMessage', ServerMessageSchema],
  ['ObserverMessage', ObserverMessageSchema],
  ['ActivityEntryJson', ActivityEntrySchema],
  ['TaskActivityJson', TaskActivitySchema],
];

/** Declarations that are TypeScript only (no schema), copied verbatim from their file. */
const DECLARATIONS: [file: string, names: string[]][] = [
  ['src/protocol/agent-stream.ts', ['CloseCodes']],
  ['src/protocol/events.ts', ['ObserverServerMessage']],
];

/** Python TypedDicts: the objects a Python program reads or writes. */
const PYTHON_SCHEMAS: [name: string, schema: TSchema][] = [
  ['Task', TaskSchema],
  ['TaskSummary', TaskSummarySchema],
  ['TaskInput', TaskInputSchema],
  ['Agent', AgentSchema],
  ['AgentInput', AgentInputSchema],
  ['ErrorJson', ErrorSchema],
];

type Schema = Record<string, any>;

/** Named object schemas by their JSON: a schema embedded in another is written as its name. */
const named = new Map<string, string>();

function tsType(s: Schema, indent: string): string {
  const name = named.get(JSON.stringify(s));
  if (name) return name;
  if ('const' in s) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((v: unknown) => JSON.stringify(v)).join(' | ');
  if (s.anyOf) return s.anyOf.map((m: Schema) => tsType(m, indent)).join(' | ');
  switch (s.type) {
    case 'string':
      return 'string';
    case 'integer':
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array': {
      const item = tsType(s.items, indent);
      return item.includes(' ') ? `(${item})[]` : `${item}[]`;
    }
    case 'object': {
      if (s.patternProperties) return `Record<string, ${tsType(Object.values(s.patternProperties)[0] as Schema, indent)}>`;
      const required = new Set<string>(s.required ?? []);
      const inner = `${indent}  `;
      const fields = Object.entries(s.properties as Record<string, Schema>).map(
        ([key, value]) => `${inner}${key}${required.has(key) ? '' : '?'}: ${tsType(value, inner)};`,
      );
      return `{\n${fields.join('\n')}\n${indent}}`;
    }
    default:
      return 'unknown';
  }
}

function pyType(s: Schema): string {
  if ('const' in s) return `Literal[${JSON.stringify(s.const)}]`;
  if (s.enum) return `Literal[${s.enum.map((v: unknown) => JSON.stringify(v)).join(', ')}]`;
  if (s.anyOf) {
    if (s.anyOf.every((m: Schema) => 'const' in m)) return `Literal[${s.anyOf.map((m: Schema) => JSON.stringify(m.const)).join(', ')}]`;
    return s.anyOf.map(pyType).join(' | ');
  }
  switch (s.type) {
    case 'string':
      return 'str';
    case 'integer':
      return 'int';
    case 'number':
      return 'float';
    case 'boolean':
      return 'bool';
    case 'null':
      return 'None';
    case 'array':
      return `list[${pyType(s.items)}]`;
    case 'object':
      if (s.patternProperties) return `dict[str, ${pyType(Object.values(s.patternProperties)[0] as Schema)}]`;
      return 'dict[str, Any]';
    default:
      return 'Any';
  }
}

function pyTypedDict(name: string, s: Schema): string {
  const required = new Set<string>(s.required ?? []);
  const fields = Object.entries(s.properties as Record<string, Schema>).map(([key, value]) => {
    const type = pyType(value);
    return `    ${key}: ${required.has(key) ? type : `NotRequired[${type}]`}`;
  });
  return `class ${name}(TypedDict):\n${fields.join('\n')}`;
}

/** The text of a top-level `export const|type|interface NAME`, with the doc comment before it. */
function declaration(source: string, file: string, name: string): string {
  const start = source.search(new RegExp(`^export (const|type|interface) ${name}\\b`, 'm'));
  if (start < 0) throw new Error(`${file} has no exported ${name}: point scripts/gen-client-wire.ts at its new place`);
  const doc = source.slice(0, start).match(/\/\*\*(?:(?!\*\/)[\s\S])*\*\/\n$/);
  let depth = 0;
  let end = start;
  for (; end < source.length; end++) {
    const c = source[end];
    // Comments and strings may hold any bracket or semicolon: skip them whole.
    if (source.startsWith('/*', end)) end = source.indexOf('*/', end) + 1;
    else if (source.startsWith('//', end)) end = source.indexOf('\n', end);
    else if (c === "'" || c === '"' || c === '`') end = source.indexOf(c, end + 1);
    else if ('{[('.includes(c)) depth++;
    else if ('}])'.includes(c)) depth--;
    if (depth === 0 && (c === ';' || (c === '}' && source.startsWith('export interface', start)))) break;
  }
  return (doc ? doc[0] : '') + source.slice(start, end + 1);
}

const header = (comment: string) =>
  `${comment} Generated by scripts/gen-client-wire.ts from the server's wire contract: do not edit.\n${comment} \`npm run gen:wire\` rewrites it; a test fails when it falls out of step.\n`;

export function typescriptWire(): string {
  const parts = [header('//').trimEnd()];
  parts.push(`export const AGENT_PROTOCOL_VERSION = ${AGENT_PROTOCOL_VERSION};`);
  parts.push(
    [
      `/** The header that names the namespace a request acts in (a client made for one namespace sends it on every request and socket). */\nexport const NAMESPACE_HEADER = ${JSON.stringify(NAMESPACE_HEADER)};`,
      `/** What a namespace's name must match, as the server checks it. */\nexport const NAMESPACE_PATTERN = ${JSON.stringify(NAMESPACE_PATTERN)};`,
      `/** Where a request of a key that reaches every namespace acts unless it names one. */\nexport const DEFAULT_NAMESPACE = ${JSON.stringify(DEFAULT_NAMESPACE)};`,
    ].join('\n'),
  );
  parts.push(`/** The HTTP status of each fleetd error code (the server's error catalogue). */\nexport const ERROR_STATUS = ${JSON.stringify(ErrorCodes, null, 2)} as const;\nexport type ErrorCode = keyof typeof ERROR_STATUS;`);
  named.clear();
  for (const [name, schema] of SCHEMAS) {
    const type = tsType(schema, '');
    if ((schema as Schema).type === 'object') named.set(JSON.stringify(schema), name);
    parts.push(schema.type === 'object' && !schema.patternProperties ? `export interface ${name} ${type}` : `export type ${name} = ${type};`);
  }
  const events = Object.entries(EventDataSchemas).map(([name, schema]) => `  ${JSON.stringify(name)}: ${tsType(schema, '  ')};`);
  parts.push(`/** The \`data\` of each event the observer stream carries, by name. */\nexport interface EventData {\n${events.join('\n')}\n}`);
  parts.push(`export type StreamEventName = keyof EventData;

/** One event, discriminated by \`name\`. */
export type StreamEvent = {
  [K in StreamEventName]: {
    /** The subscribed topic that delivered it. */
    topic: string;
    name: K;
    data: EventData[K];
    /** When the server published it, ISO 8601. */
    at: string;
    /** Its number in the node's event stream, increasing along every topic: where a subscription resumes. */
    seq: number;
  };
}[StreamEventName];`);
  for (const [file, names] of DECLARATIONS) {
    const source = readFileSync(join(root, file), 'utf8');
    for (const name of names) parts.push(declaration(source, file, name));
  }
  return `${parts.join('\n\n')}\n`;
}

export function pythonWire(): string {
  const parts = [
    `${header('#')}"""The wire objects of fleetd's API, as TypedDicts."""\n# No \`from __future__ import annotations\`: TypedDict must see NotRequired at run time.\nfrom typing import Any, Literal, NotRequired, TypedDict`,
    `AGENT_PROTOCOL_VERSION = ${AGENT_PROTOCOL_VERSION}`,
    [
      `#: The header that names the namespace a request acts in (a client made for one namespace sends it on every request and socket).\nNAMESPACE_HEADER = ${JSON.stringify(NAMESPACE_HEADER)}`,
      `#: What a namespace's name must match, as the server checks it.\nNAMESPACE_PATTERN = ${JSON.stringify(NAMESPACE_PATTERN)}`,
      `#: Where a request of a key that reaches every namespace acts unless it names one.\nDEFAULT_NAMESPACE = ${JSON.stringify(DEFAULT_NAMESPACE)}`,
    ].join('\n'),
    `#: The HTTP status of each fleetd error code (the server's error catalogue).\nERROR_STATUS: dict[str, int] = {\n${Object.entries(ErrorCodes)
      .map(([code, status]) => `    ${JSON.stringify(code)}: ${status},`)
      .join('\n')}\n}`,
    `TaskStatus = ${pyType(TaskStatusSchema)}`,
    ...PYTHON_SCHEMAS.map(([name, schema]) => pyTypedDict(name, schema)),
  ];
  return `${parts.join('\n\n\n')}\n`;
}

export const WIRE_FILES: [path: string, render: () => string][] = [
  ['packages/client/src/wire.ts', typescriptWire],
  ['clients/python/fleetd/wire.py', pythonWire],
];

if (import.meta.filename === process.argv[1]) {
  const check = process.argv.includes('--check');
  let stale = 0;
  for (const [path, render] of WIRE_FILES) {
    const fresh = render();
    const file = join(root, path);
    if (check) {
      let committed = '';
      try {
        committed = readFileSync(file, 'utf8');
      } catch {}
      if (committed !== fresh) (stale++, process.stderr.write(`${path} is out of step with the server's schemas: run npm run gen:wire\n`));
    } else writeFileSync(file, fresh);
  }
  process.exit(stale > 0 ? 1 : 0);
}
