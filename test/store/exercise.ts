import { describe } from 'node:test';
import { exerciseActivity } from './activity.js';
import { exerciseAgents } from './agents.js';
import { exerciseAudit } from './audit.js';
import { exerciseCases } from './cases.js';
import { exerciseControl } from './control.js';
import { exerciseDependencies } from './dependencies.js';
import type { DriverFactory } from './harness.js';
import { exerciseKeys } from './keys.js';
import { exerciseListen } from './listen.js';
import { exerciseLocks } from './locks.js';
import { exerciseRuns } from './runs.js';
import { exerciseSchedules } from './schedules.js';
import { exerciseTasks } from './tasks.js';
import { exerciseTypes } from './types.js';

/**
 * The conformance suite every store driver passes, one file per data area (as river's
 * riverdrivertest): each behaviour core relies on, tested once, through the contracts only, with
 * the clock passed in and core's rules handed down as core hands them. What a driver says it
 * cannot do (its abilities) is not asked of it.
 */
export function exerciseDriver(name: string, factory: DriverFactory): void {
  // About a hundred tests, each on a fresh store (on PostgreSQL a schema migrated from nothing):
  // two minutes was spent whole on a machine whose two cores other test runs share.
  describe(`${name} driver`, { timeout: 300_000 }, async () => {
    const probe = await factory();
    const { supportsListen } = probe.driver;
    await probe.destroy();
    exerciseTasks(factory);
    exerciseAgents(factory);
    exerciseLocks(factory);
    exerciseKeys(factory);
    exerciseAudit(factory);
    exerciseRuns(factory);
    exerciseCases(factory);
    exerciseActivity(factory);
    exerciseControl(factory);
    exerciseDependencies(factory, supportsListen);
    exerciseSchedules(factory);
    exerciseTypes(factory);
    if (supportsListen) exerciseListen(factory);
  });
}
