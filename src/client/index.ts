/** fleetd/client: the TypeScript SDK, which is the package @fleetd/client (packages/client). */
export * from '@fleetd/client';
