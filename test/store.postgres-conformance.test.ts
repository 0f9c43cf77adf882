import { exerciseDriver } from './store/exercise.js';
import { freshPostgres } from './store/postgres.js';

exerciseDriver('postgres', () => freshPostgres({ poolSize: 4 }));
