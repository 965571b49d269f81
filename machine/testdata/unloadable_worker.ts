/**
 * A vCPU Worker module that fails while loading, as one whose import cannot be resolved or whose
 * top level throws (smp_runner_test.ts).
 *
 * @module
 */

throw new Error("this vCPU Worker cannot load");
