import { PostgresCaseStore } from '../src/store/postgres/postgres-case-store.js';
import { PostgresPipelineStore } from '../src/store/postgres/postgres-pipeline-store.js';
import { exercisePipelineStore } from './pipeline-store.conformance.js';
import { freshPostgresStore } from './store/postgres.js';

exercisePipelineStore('postgres', async () => {
  const { store, destroy } = await freshPostgresStore({ poolSize: 4 });
  return { runs: new PostgresPipelineStore(store), cases: new PostgresCaseStore(store), close: destroy };
});
