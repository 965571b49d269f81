/**
 * QEMU's `info pic` text of an IOAPIC (`ioapic_print_redtbl`), from its registers: the userspace
 * `Ioapic` prints itself with it, and a machine with KVM's in-kernel IOAPIC prints the state
 * `KVM_GET_IRQCHIP` gives, without loading the model.
 *
 * @module
 */

/** What the text shows: the version, ID, IOREGSEL and IRR registers and the 24 entries. */
export interface IoapicInfo {
  /** Version register's low byte (0x20 or 0x11). */
  readonly version: number;
  /** The APIC ID (0-15). */
  readonly id: number;
  /** IOREGSEL. */
  readonly ioregsel: number;
  /** Pending inputs, a bit per pin. */
  readonly irr: number;
  /** The 64-bit redirection entries, pin 0 first. */
  readonly entries: readonly bigint[];
}

const DELIVERY_MODE_NAMES = ["fixed", "lowest", "SMI", "...", "NMI", "INIT", "...", "extINT"];
const REDTBL_BASE = 0x10;
const DEST_MODE_BIT = 1 << 11;
const POLARITY_BIT = 1 << 13;
const REMOTE_IRR_BIT = 1 << 14;
const TRIGGER_LEVEL_BIT = 1 << 15;
const MASKED_BIT = 1 << 16;

/**
 * The lines QEMU's `info pic` prints for an IOAPIC.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatIoapicInfo } from "./ioapic_info.ts";
 * const entries = Array.from({ length: 24 }, () => 0x10000n); // masked
 * entries[2] = 0x30n; // pin 2: vector 0x30, edge, to APIC 0
 * const text = formatIoapicInfo({ version: 0x20, id: 0, ioregsel: 0, irr: 0, entries });
 * assert.match(text, /^ioapic0: ver=0x20 id=0x00 sel=0x00\n/);
 * assert.match(text, /  pin 2  0x0000000000000030 dest=0 vec=48  active-hi edge\s+fixed\s+physical\n/);
 * assert.match(text, /\n  IRR      \(none\)\n  Remote IRR \(none\)\n$/);
 * ```
 */
export function formatIoapicInfo(s: IoapicInfo): string {
  const hex2 = (n: number) => n.toString(16).padStart(2, "0");
  let out = `ioapic0: ver=0x${s.version.toString(16)} id=0x${hex2(s.id)} sel=0x${hex2(s.ioregsel)}`;
  out += s.ioregsel ? ` (redir[${((s.ioregsel - REDTBL_BASE) >> 1) >>> 0}])\n` : "\n";
  let remoteIrr = 0;
  s.entries.forEach((entry, pin) => {
    const lo = Number(entry & 0xffff_ffffn);
    const hi = Number(entry >> 32n);
    const logical = (lo & DEST_MODE_BIT) !== 0;
    const dest = (hi >>> 24) & (logical ? 0xff : 0xf);
    const level = (lo & TRIGGER_LEVEL_BIT) !== 0;
    out += `  pin ${String(pin).padEnd(2)} 0x${entry.toString(16).padStart(16, "0")}` +
      ` dest=${dest.toString(16)} vec=${String(lo & 0xff).padEnd(3)}` +
      ` ${lo & POLARITY_BIT ? "active-lo" : "active-hi"} ${(level ? "level" : "edge").padEnd(5)}` +
      ` ${(lo & MASKED_BIT ? "masked" : "").padEnd(6)}` +
      ` ${DELIVERY_MODE_NAMES[(lo >> 8) & 7].padEnd(6)}` +
      ` ${logical ? "logical" : "physical"}\n`;
    if (level && lo & REMOTE_IRR_BIT) remoteIrr |= 1 << pin;
  });
  const dump = (name: string, bitmap: number) => {
    let line = `${name.padEnd(10)} `;
    if (bitmap === 0) return `${line}(none)\n`;
    for (let pin = 0; pin < s.entries.length; pin++) {
      if (bitmap & (1 << pin)) line += `${String(pin).padEnd(2)} `;
    }
    return `${line}\n`;
  };
  return out + dump("  IRR", s.irr) + dump("  Remote IRR", remoteIrr);
}
