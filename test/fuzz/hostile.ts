import fc from 'fast-check';

/**
 * Hostile values for the API fuzzer, and arbitraries derived from the JSON Schemas of the OpenAPI
 * document: mostly what the schema asks for, with hostile strings and numbers in it, and at every
 * level a chance of a wrong type, a missing required field or an unknown one.
 *
 * Written on fast-check rather than taken from a library: json-schema-fast-check is built on
 * fast-check 1 and unmaintained, and json-schema-faker makes only valid values, unseeded by
 * fast-check, where a fuzzer wants mostly invalid ones it can replay.
 */

export type Schema = Record<string, any>;

/** A JSON value nested `depth` levels deep. JSON.stringify recurses, so it is written as text. */
export class Deep {
  constructor(readonly depth: number) {}
}

/** Bytes that are not UTF-8 (an overlong "/", a lone continuation byte, a UTF-8-encoded surrogate). */
export class BadUtf8 {
  constructor(readonly bytes: number[]) {}
}

/** JSON text of a value that may hold Deep and BadUtf8 parts, as bytes. */
export function toJsonBytes(value: unknown): Buffer {
  const parts: Buffer[] = [];
  const write = (v: unknown): void => {
    if (v instanceof Deep) {
      parts.push(Buffer.from('{"a":['.repeat(v.depth / 2) + '1' + ']}'.repeat(v.depth / 2)));
    } else if (v instanceof BadUtf8) {
      parts.push(Buffer.from('"x'), Buffer.from(v.bytes), Buffer.from('y"'));
    } else if (Array.isArray(v)) {
      parts.push(Buffer.from('['));
      v.forEach((item, i) => {
        if (i > 0) parts.push(Buffer.from(','));
        write(item);
      });
      parts.push(Buffer.from(']'));
    } else if (v !== null && typeof v === 'object') {
      parts.push(Buffer.from('{'));
      Object.entries(v).forEach(([key, item], i) => {
        if (i > 0) parts.push(Buffer.from(','));
        parts.push(Buffer.from(`${JSON.stringify(key)}:`));
        write(item);
      });
      parts.push(Buffer.from('}'));
    } else {
      // undefined has no JSON form: it stands for a field left out, so write null in arrays.
      parts.push(Buffer.from(JSON.stringify(v ?? null)));
    }
  };
  write(value);
  return Buffer.concat(parts);
}

export const hostileStrings: string[] = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '\uD800',
  'x\uDC00y',
  '\u202Egnp.exe',
  '\u200B',
  '\uFEFF',
  '👩‍👩‍👧‍👦🔥',
  'e\u0301'.repeat(300),
  'ﷺ'.repeat(50),
  "' OR '1'='1",
  "1; DROP TABLE tasks; --",
  "x' UNION SELECT * FROM sqlite_master --",
  'Robert"); DROP TABLE agents;--',
  '$1',
  '../../../etc/passwd',
  '..\\..\\windows\\win.ini',
  '%2e%2e%2f%2e%2e%2f',
  '/etc/passwd',
  'a/../../b',
  '__proto__',
  'constructor',
  'toString',
  '{{input.text}}',
  '${process.exit(1)}',
  '<script>alert(1)</script>',
  '5',
  '-1',
  '1e309',
  'NaN',
  'null',
  'true',
  '\r\nX-Injected: 1',
  'a'.repeat(257),
  'a'.repeat(70_000),
];

export const hostileNumbers: number[] = [0, -0, -1, 1.5, 2 ** 31, 2 ** 53, 2 ** 53 + 2, 2 ** 64, -(2 ** 63), 1e308, -1e308, 5e-324];

const codeUnit = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c));

/** Any string: the list above, arbitrary code points, and arbitrary UTF-16 code units (lone surrogates too). */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...hostileStrings),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: codeUnit, maxLength: 40 }),
);

export const hostileNumber: fc.Arbitrary<number> = fc.oneof(fc.constantFrom(...hostileNumbers), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }));

/** Any JSON value, hostile strings and numbers included, deep nesting and invalid UTF-8 too. */
export const hostileJson: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 2, arbitrary: hostileString },
  { weight: 1, arbitrary: hostileNumber },
  { weight: 1, arbitrary: fc.constantFrom(new Deep(64), new Deep(66), new Deep(10_000)) },
  { weight: 1, arbitrary: fc.constantFrom(new BadUtf8([0xc0, 0xaf]), new BadUtf8([0x80]), new BadUtf8([0xed, 0xa0, 0x80]), new BadUtf8([0xff, 0xfe])) },
  { weight: 1, arbitrary: fc.constantFrom([], {}, null, Array.from({ length: 10_000 }, (_, i) => i)) },
);

function resolve(schema: Schema, components: Record<string, Schema>): Schema {
  const ref = schema.$ref as string | undefined;
  return ref ? resolve(components[ref.split('/').pop()!], components) : schema;
}

/**
 * Values for `schema`: mostly of its shape (with hostile strings and numbers where it allows any),
 * and at every level a chance of something else entirely.
 */
export function arbitraryFor(schema: Schema, components: Record<string, Schema> = {}, depth = 0): fc.Arbitrary<unknown> {
  const s = resolve(schema, components);
  const shaped = shapedFor(s, components, depth);
  return fc.oneof({ weight: 6, arbitrary: shaped }, { weight: 1, arbitrary: hostileJson });
}

function shapedFor(s: Schema, components: Record<string, Schema>, depth: number): fc.Arbitrary<unknown> {
  const variants = (s.anyOf ?? s.oneOf) as Schema[] | undefined;
  if (variants) return fc.oneof(...variants.map((v) => arbitraryFor(v, components, depth)));
  if ('const' in s) return fc.constant(s.const);
  if (Array.isArray(s.enum)) return fc.constantFrom(...s.enum);
  const type = Array.isArray(s.type) ? s.type[0] : s.type;
  switch (type) {
    case 'string': {
      const valid = s.format === 'date-time'
        ? fc.date({ noInvalidDate: true }).map((d) => d.toISOString())
        : fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}$/);
      return fc.oneof({ weight: 2, arbitrary: valid }, { weight: 1, arbitrary: hostileString });
    }
    case 'integer':
    case 'number': {
      const min = s.minimum ?? -1_000_000;
      const max = s.maximum ?? 1_000_000;
      return fc.oneof({ weight: 2, arbitrary: fc.integer({ min: Math.max(min, -(2 ** 31)), max: Math.min(max, 2 ** 31) }) }, { weight: 1, arbitrary: hostileNumber });
    }
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'array': {
      const items = s.items ? arbitraryFor(s.items, components, depth + 1) : hostileJson;
      return fc.oneof(
        { weight: 4, arbitrary: fc.array(items, { maxLength: 4 }) },
        // Past maxItems, or just big.
        { weight: 1, arbitrary: fc.tuple(fc.constantFrom((s.maxItems ?? 1_000) + 1, 20_000), fc.constantFrom(1, 'x', {}, null)).map(([n, item]) => Array(n).fill(item)) },
      );
    }
    case 'object': {
      const properties = (s.properties ?? {}) as Record<string, Schema>;
      const required = new Set<string>(s.required ?? []);
      if (Object.keys(properties).length === 0) {
        return s.additionalProperties ? fc.dictionary(hostileString, arbitraryFor(s.additionalProperties, components, depth + 1), { maxKeys: 3 }) : hostileJson;
      }
      const fields = fc.record(
        Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, arbitraryFor(v, components, depth + 1)])),
        { requiredKeys: [...required] },
      );
      return fc.oneof(
        { weight: 6, arbitrary: fields },
        // A required field missing.
        {
          weight: 1,
          arbitrary: fc.tuple(fields, fc.constantFrom(...Object.keys(properties))).map(([value, drop]) => {
            const { [drop]: _dropped, ...rest } = value as Record<string, unknown>;
            return rest;
          }),
        },
        // A field nobody asked for.
        { weight: 1, arbitrary: fc.tuple(fields, hostileString, hostileJson).map(([value, key, extra]) => ({ ...(value as object), [key]: extra })) },
      );
    }
    default:
      // No type: any JSON at all (payloads, results, inputs).
      return hostileJson;
  }
}
