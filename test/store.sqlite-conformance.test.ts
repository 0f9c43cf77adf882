import { openSqlite } from '../src/store/sqlite/driver.js';
import { exerciseDriver } from './store/exercise.js';

exerciseDriver('sqlite', async () => {
  const driver = openSqlite({ dataDir: ':memory:' });
  await driver.migrate();
  return { driver, destroy: () => driver.close() };
});
