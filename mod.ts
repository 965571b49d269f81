/**
 * Public entry point: the memory API (and, as they land, the KVM layer, devices and boards).
 *
 * @module
 */

export * from "./memory/mod.ts";
