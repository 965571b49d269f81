/**
 * The error of a socket the front-end could not listen on (`-qmp`, `-gdb`, `--web`): one line,
 * status 1. Each server's own error class extends it, so that the command line can name them all
 * without loading the servers on runs that start none.
 *
 * @module
 */

/** A socket path that cannot be bound, a port in use, a host that does not resolve. */
export class ListenError extends Error {}
