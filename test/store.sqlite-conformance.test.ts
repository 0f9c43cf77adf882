import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { exerciseStore } from './store/exercise-store.js';

exerciseStore('sqlite', async () => {
  const store = new SqliteStore({ dataDir: ':memory:' });
  await store.migrate();
  return { store, destroy: () => store.close() };
});
