/**
 * A route's hooks of one kind as a list: Fastify takes none, one, or several. Plugins that add
 * their hook to every route (in `onRoute`) put it before or after the route's own with this.
 */
export const hookList = <T>(hooks: T | readonly T[] | undefined): T[] => (hooks === undefined ? [] : Array.isArray(hooks) ? [...hooks] : [hooks as T]);
