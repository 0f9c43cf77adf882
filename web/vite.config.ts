import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { defineConfig, type Plugin } from 'vite';

const outDir = fileURLToPath(new URL('../dist/web', import.meta.url));

/**
 * Writes .gz and .br beside each built asset, so fleetd serves them precompressed (@fastify/static
 * `preCompressed`) instead of compressing the same bytes on every request.
 */
function precompress(): Plugin {
  return {
    name: 'fleetd-precompress',
    apply: 'build',
    closeBundle() {
      const dirs = [outDir, join(outDir, 'assets')];
      for (const dir of dirs) {
        for (const name of readdirSync(dir)) {
          if (!/\.(js|css|html|svg)$/.test(name)) continue;
          const body = readFileSync(join(dir, name));
          writeFileSync(join(dir, `${name}.gz`), gzipSync(body, { level: 9 }));
          writeFileSync(join(dir, `${name}.br`), brotliCompressSync(body));
        }
      }
    },
  };
}

/**
 * On a load of the overview (the address has no route), starts fetching the overview's chunk and
 * style from the page itself, beside the entry script, rather than after the entry has run and
 * asked for them: one round of requests fewer before the first paint. Other first views (deep
 * links) fetch nothing extra. First in the head: an inline script after a stylesheet waits for it.
 */
function preloadOverview(): Plugin {
  return {
    name: 'fleetd-preload-overview',
    apply: 'build',
    transformIndexHtml: {
      order: 'post',
      handler(html, ctx) {
        const chunk = Object.values(ctx.bundle ?? {}).find((c) => c.type === 'chunk' && c.name === 'overview');
        if (!chunk || chunk.type !== 'chunk') throw new Error('no overview chunk to preload');
        const links = [
          { rel: 'modulepreload', href: `/${chunk.fileName}` },
          ...[...(chunk.viteMetadata?.importedCss ?? [])].map((css) => ({ rel: 'preload', as: 'style', href: `/${css}` })),
        ];
        const script = `if (/^#?\\/?$/.test(location.hash)) for (const a of ${JSON.stringify(links)}) document.head.appendChild(Object.assign(document.createElement('link'), a, { crossOrigin: '' }));`;
        return [{ tag: 'script', children: script, injectTo: 'head-prepend' }];
      },
    },
  };
}

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  // Preact's automatic JSX runtime through esbuild: no Babel preset needed.
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir,
    emptyOutDir: true,
    target: 'es2022',
    assetsDir: 'assets',
    modulePreload: { polyfill: false },
    // The small helpers several views share go into one chunk, rather than one chunk of a few
    // hundred bytes each: each chunk is one more request on a cold load.
    rollupOptions: {
      output: { manualChunks: (id) => (/\/web\/src\/(format|types|lists|agent-refs|views\/run-events)\.tsx?$/.test(id) ? 'shared' : undefined) },
    },
  },
  plugins: [preloadOverview(), precompress()],
});
