import type { Route } from '../router.js';

/** What every view gets from the shell (main.tsx), which loads each view as a chunk of its own. */
export interface ViewProps {
  route: Route;
}
