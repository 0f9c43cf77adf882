import { exerciseStore } from './store/exercise-store.js';
import { freshPostgresStore } from './store/postgres.js';

exerciseStore('postgres', () => freshPostgresStore());
