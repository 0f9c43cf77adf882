import { after } from 'node:test';
import { exerciseDriver } from './store/exercise.js';
import { sharedPostgres } from './store/postgres.js';

// One schema migrated once, reset after each test (see sharedPostgres).
const postgres = sharedPostgres({ poolSize: 4 });
after(() => postgres.drop());
exerciseDriver('postgres', () => postgres.open());
