import { SqliteCaseStore } from '../src/store/sqlite/sqlite-case-store.js';
import { SqlitePipelineStore } from '../src/store/sqlite/sqlite-pipeline-store.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { exercisePipelineStore } from './pipeline-store.conformance.js';

exercisePipelineStore('sqlite', async () => {
  const store = new SqliteStore({ dataDir: ':memory:' });
  return {
    runs: new SqlitePipelineStore(store.db, store.groupCommit),
    cases: new SqliteCaseStore(store.db, store.groupCommit),
    close: () => store.close(),
  };
});
