import assert from "node:assert/strict";
import fc from "fast-check";
import { checkBadStates, checkRoundTrip, type StateHarness } from "./_state_test_util.ts";
import { MemTxResult } from "../memory/mod.ts";
import { RecordingIrqLine } from "./irq_line.ts";
import { ioSpace, portIo } from "./_test_util.ts";
import { COM1_PORT, COM2_PORT, Uart16550, type Uart16550Options } from "./uart_16550.ts";

const RBR = COM1_PORT + 0;
const THR = COM1_PORT + 0;
const DLL = COM1_PORT + 0;
const IER = COM1_PORT + 1;
const DLM = COM1_PORT + 1;
const IIR = COM1_PORT + 2;
const FCR = COM1_PORT + 2;
const EFR = COM1_PORT + 2; // with LCR = 0xbf on chips that have it
const LCR = COM1_PORT + 3;
const MCR = COM1_PORT + 4;
const LSR = COM1_PORT + 5;
const MSR = COM1_PORT + 6;
const SCR = COM1_PORT + 7;

const IER_RDI = 0x01;
const IER_THRI = 0x02;
const IER_RLSI = 0x04;
const IIR_NO_INT = 0x01;

function setup(options: Uart16550Options = {}) {
  const { io, as } = ioSpace();
  const irq = new RecordingIrqLine();
  const sent: number[] = [];
  const uart = new Uart16550({ irq, transmit: (b) => sent.push(b), ...options });
  uart.map(io);
  return { io, as, irq, sent, uart, ...portIo(as) };
}

Deno.test("UART: power-on registers as QEMU's serial_reset leaves them", () => {
  const { as, inb, irq } = setup();
  using _ = as;
  assert.equal(inb(IER), 0);
  assert.equal(inb(IIR), IIR_NO_INT);
  assert.equal(inb(LCR), 0);
  assert.equal(inb(MCR), 0x08); // OUT2
  assert.equal(inb(LSR), 0x60); // THRE | TEMT: idle
  assert.equal(inb(MSR), 0xb0); // DCD | DSR | CTS
  assert.equal(inb(SCR), 0);
  assert.equal(inb(RBR), 0);
  assert.equal(irq.history.length, 0, "nothing driven at power-on");
});

Deno.test("UART: Linux 8250 autoconfig probes a 16550A", () => {
  const { as, inb, outb, irq } = setup();
  using _ = as;
  // Scratch test on IER (autoconfig, "IER test").
  const scratch = inb(IER);
  outb(IER, 0);
  const scratch2 = inb(IER) & 0x0f;
  outb(IER, 0x0f);
  const scratch3 = inb(IER) & 0x0f;
  outb(IER, scratch);
  assert.deepEqual([scratch2, scratch3], [0, 0x0f]);
  // The scratch register holds what was written.
  outb(SCR, 0xa5);
  assert.equal(inb(SCR), 0xa5);
  outb(SCR, 0x5a);
  assert.equal(inb(SCR), 0x5a);
  // Loopback test: RTS | OUT2 must read back as CTS | DCD.
  const saveMcr = inb(MCR);
  const saveLcr = inb(LCR);
  outb(MCR, 0x10 | 0x0a);
  const status1 = inb(MSR) & 0xf0;
  outb(MCR, saveMcr);
  assert.equal(status1, 0x90);
  // EFR probe (LCR 0xbf), then FIFO detection: IIR bits 7:6 = 3 means a 16550A.
  outb(LCR, 0xbf);
  outb(EFR, 0);
  outb(LCR, 0);
  outb(FCR, 0x01);
  assert.equal(inb(IIR) >> 6, 3, "FIFOs enabled: IIR 0xc0");
  // autoconfig_16550a: no EFR with DLAB or with 0xbf (the register reads as IIR, never 0).
  outb(LCR, 0x80);
  assert.notEqual(inb(EFR), 0);
  outb(LCR, 0xbf);
  assert.notEqual(inb(EFR), 0);
  // Not a National Semiconductor SuperIO: EXCR1 (LCR 0xe0, offset 2) does not follow MCR.LOOP.
  outb(LCR, 0);
  const mcr = inb(MCR);
  outb(LCR, 0xe0);
  let excr1 = inb(COM1_PORT + 2);
  assert.equal((excr1 ^ mcr) & 0x10, 0);
  outb(LCR, 0);
  outb(MCR, mcr ^ 0x10);
  outb(LCR, 0xe0);
  excr1 = inb(COM1_PORT + 2);
  outb(LCR, 0);
  outb(MCR, mcr);
  assert.equal((excr1 ^ mcr) & 0x10, 0, "not an NS16550A");
  // Not a TI16750: the 64-byte FIFO bit (FCR bit 5) does not show in IIR bit 5.
  outb(LCR, 0);
  outb(FCR, 0x21);
  const ti1 = inb(IIR) >> 5;
  outb(FCR, 0x01);
  outb(LCR, 0x80);
  outb(FCR, 0x21);
  const ti2 = inb(IIR) >> 5;
  outb(FCR, 0x01);
  outb(LCR, 0);
  assert.deepEqual([ti1, ti2], [6, 6]);
  // Not an XScale: IER bit 6 (UUE) does not stick.
  const iersave = inb(IER);
  outb(IER, iersave & ~0x40);
  assert.equal(inb(IER) & 0x40, 0);
  outb(IER, iersave | 0x40);
  assert.equal(inb(IER) & 0x40, 0);
  outb(IER, iersave);
  outb(LCR, saveLcr);
  // Reset the UART as autoconfig does.
  outb(MCR, saveMcr);
  outb(FCR, 0x01);
  outb(FCR, 0x07);
  outb(FCR, 0);
  inb(RBR);
  outb(IER, 0);
  assert.equal(inb(LSR), 0x60);
  assert.equal(irq.level, false);
  assert.equal(irq.redundantCalls, 0);
});

Deno.test("UART: Linux 8250 startup THRE tests find no bugs", () => {
  const { as, inb, outb } = setup();
  using _ = as;
  outb(FCR, 0x07);
  // "Test for UARTs that do not reassert THRE when the transmitter is idle".
  outb(IER, IER_THRI);
  const iir1 = inb(IIR);
  outb(IER, 0);
  outb(IER, IER_THRI);
  const iir = inb(IIR);
  outb(IER, 0);
  assert.equal(iir1, 0xc2);
  assert.equal(iir, 0xc2);
  assert.ok(!(!(iir1 & IIR_NO_INT) && iir & IIR_NO_INT), "no UART_BUG_THRE");
  // "Do a quick test to see if we receive an interrupt when we enable the TX irq" (UART_BUG_TXEN).
  outb(IER, IER_THRI);
  const lsr = inb(LSR);
  const iir2 = inb(IIR);
  outb(IER, 0);
  assert.ok(!(lsr & 0x40 && iir2 & IIR_NO_INT), "no UART_BUG_TXEN");
});

Deno.test("UART: THRE interrupt: raised on enable, cleared by an IIR read, re-armed by each THR write", () => {
  const { as, inb, outb, irq, sent } = setup();
  using _ = as;
  outb(FCR, 0xc7);
  outb(IER, IER_RDI | IER_RLSI);
  assert.equal(irq.level, false);
  // The tty layer has data: start_tx sets IER.THRI with THR empty → interrupt at once.
  outb(IER, IER_RDI | IER_RLSI | IER_THRI);
  assert.equal(irq.level, true);
  assert.equal(irq.risingEdges, 1);
  // The interrupt handler: IIR says THRE, which acknowledges it.
  assert.equal(inb(IIR), 0xc2);
  assert.equal(irq.level, false);
  assert.equal(inb(IIR), 0xc1, "acknowledged");
  // It fills the FIFO (16 bytes): every write clears THRE and, transmission being instant,
  // sets it again — a fresh edge each time.
  const text = new TextEncoder().encode("hello, world 16!");
  for (const byte of text) outb(THR, byte);
  assert.deepEqual(sent, [...text]);
  assert.equal(irq.level, true);
  assert.equal(irq.risingEdges, 1 + text.length);
  assert.equal(inb(LSR) & 0x60, 0x60);
  // Next interrupt: THRE again; no more data, so stop_tx clears IER.THRI.
  assert.equal(inb(IIR), 0xc2);
  outb(IER, IER_RDI | IER_RLSI);
  assert.equal(irq.level, false);
  assert.equal(inb(IIR), 0xc1);
  // Re-enabling THRI after it was acknowledged raises it again (THRE sampled on the rising edge).
  outb(IER, IER_RDI | IER_RLSI | IER_THRI);
  assert.equal(inb(IIR), 0xc2);
  // Writing IER with THRI unchanged does not re-raise an acknowledged THRE.
  outb(IER, IER_RDI | IER_THRI);
  assert.equal(inb(IIR), 0xc1);
  assert.equal(irq.redundantCalls, 0);
});

Deno.test("UART: without THRI nothing is raised by transmission, and output still flows", () => {
  const { as, inb, outb, irq, sent } = setup();
  using _ = as;
  for (const byte of [1, 2, 3]) {
    assert.equal(inb(LSR) & 0x20, 0x20, "polling LSR.THRE");
    outb(THR, byte);
  }
  assert.deepEqual(sent, [1, 2, 3]);
  assert.equal(irq.history.length, 0);
});

Deno.test("UART: received data with FIFOs off: RDI, overrun overwrites and sets OE", () => {
  const { as, inb, outb, irq, uart } = setup();
  using _ = as;
  outb(IER, IER_RDI);
  uart.receive([0x31]);
  assert.equal(inb(LSR) & 0x01, 0x01);
  assert.equal(inb(IIR), 0x04, "no FIFO bits");
  assert.equal(irq.level, true);
  assert.equal(uart.canReceive(), 0);
  uart.receive([0x32]);
  assert.equal(inb(LSR), 0x63, "DR | OE | THRE | TEMT");
  assert.equal(inb(LSR), 0x61, "reading LSR cleared OE");
  assert.equal(inb(RBR), 0x32);
  assert.equal(irq.level, false);
  assert.equal(inb(LSR) & 0x01, 0);
  assert.equal(irq.redundantCalls, 0);
});

Deno.test("UART: receive FIFO: trigger level, draining, character timeout (manual)", () => {
  const { as, inb, outb, irq, uart } = setup({ rxTimeout: "manual" });
  using _ = as;
  outb(FCR, 0x81); // FIFO on, trigger level 8
  outb(IER, IER_RDI);
  uart.receive([1, 2, 3]);
  assert.equal(uart.rxCount, 3);
  assert.equal(inb(LSR) & 0x01, 0x01);
  assert.equal(irq.level, false, "3 bytes are below the trigger level");
  assert.equal(inb(IIR), 0xc1);
  uart.receive([4, 5, 6, 7, 8]);
  assert.equal(irq.level, true, "8 bytes reach it");
  assert.equal(inb(IIR), 0xc4);
  assert.equal(inb(RBR), 1);
  assert.equal(irq.level, false, "7 left, below the level again");
  // The board's timer: four character times without activity.
  uart.characterTimeout();
  assert.equal(inb(IIR), 0xcc);
  assert.equal(irq.level, true);
  const rest = [];
  while (inb(LSR) & 0x01) rest.push(inb(RBR));
  assert.deepEqual(rest, [2, 3, 4, 5, 6, 7, 8]);
  assert.equal(irq.level, false);
  assert.equal(inb(IIR), 0xc1);
  assert.equal(inb(RBR), 0, "an empty FIFO reads 0");
  uart.characterTimeout();
  assert.equal(irq.level, false, "no timeout without data");
  assert.equal(irq.redundantCalls, 0);
});

Deno.test("UART: receive FIFO: immediate timeout gives IIR 0xcc below the trigger level", () => {
  const { as, inb, outb, irq, uart } = setup();
  using _ = as;
  outb(FCR, 0xc1); // trigger level 14
  outb(IER, IER_RDI);
  uart.receive(new TextEncoder().encode("ls\r"));
  assert.equal(inb(IIR), 0xcc);
  assert.equal(irq.level, true);
  assert.equal(inb(RBR), 0x6c);
  assert.equal(inb(IIR), 0xcc, "bytes left below the level time out again");
  assert.equal(inb(RBR), 0x73);
  assert.equal(inb(RBR), 0x0d);
  assert.equal(irq.level, false);
  // At or above the trigger level it is a plain received-data interrupt.
  uart.receive(new Uint8Array(14).fill(0x61));
  assert.equal(inb(IIR), 0xc4);
  assert.equal(irq.redundantCalls, 0);
});

Deno.test("UART: FIFO overrun keeps the FIFO, sets OE and raises the line-status interrupt", () => {
  const { as, inb, outb, irq, uart } = setup();
  using _ = as;
  outb(FCR, 0x07);
  outb(IER, IER_RDI | IER_RLSI);
  assert.equal(uart.canReceive(), 16);
  uart.receive(Array.from({ length: 20 }, (_, i) => i));
  assert.equal(uart.rxCount, 16);
  assert.equal(inb(IIR), 0xc6, "line status has the highest priority");
  assert.equal(inb(LSR) & 0x03, 0x03);
  assert.equal(inb(IIR), 0xc4, "OE cleared by the LSR read; received data next");
  const got = [];
  while (inb(LSR) & 0x01) got.push(inb(RBR));
  assert.deepEqual(got, Array.from({ length: 16 }, (_, i) => i));
  assert.equal(irq.level, false);
  assert.equal(irq.redundantCalls, 0);
});

Deno.test("UART: FCR clears the FIFOs and switching them off drops the 0xc0 bits", () => {
  const { as, inb, outb, uart } = setup();
  using _ = as;
  outb(FCR, 0x01);
  uart.receive([1, 2, 3]);
  outb(FCR, 0x03); // clear receive FIFO
  assert.equal(uart.rxCount, 0);
  assert.equal(inb(LSR) & 0x01, 0);
  outb(FCR, 0x00);
  assert.equal(inb(IIR), 0x01);
});

Deno.test("UART: DLAB switches offsets 0 and 1 to the divisor latch", () => {
  const { as, inb, outb, outw, sent } = setup();
  using _ = as;
  outb(IER, 0x05);
  outb(LCR, 0x83); // DLAB, 8N1
  assert.equal(inb(DLL), 0x0c, "9600 baud at reset");
  assert.equal(inb(DLM), 0x00);
  outb(DLL, 0x01); // 115200 baud
  outb(DLM, 0x00);
  assert.equal(inb(DLL), 0x01);
  assert.deepEqual(sent, [], "not a THR write");
  // A 16-bit write splits into DLL then DLM (byte registers).
  outw(DLL, 0x0302);
  assert.deepEqual([inb(DLL), inb(DLM)], [0x02, 0x03]);
  outb(LCR, 0x03);
  assert.equal(inb(IER), 0x05, "IER kept its value behind the latch");
  assert.equal(inb(LCR), 0x03);
  outb(LCR, 0x83);
  assert.equal(inb(DLM), 0x03, "the divisor survives DLAB off/on");
});

Deno.test("UART: loopback routes THR to RBR and modem outputs to inputs", () => {
  const { as, inb, outb, irq, sent } = setup();
  using _ = as;
  outb(MCR, 0x10);
  outb(IER, IER_RDI);
  outb(THR, 0x5a);
  assert.deepEqual(sent, [], "nothing leaves the chip in loopback");
  assert.equal(inb(LSR) & 0x61, 0x61);
  assert.equal(irq.level, true);
  assert.equal(inb(RBR), 0x5a);
  assert.equal(irq.level, false);
  // OUT2→DCD, OUT1→RI, RTS→CTS, DTR→DSR.
  for (
    const [mcr, msr] of [[0x10, 0x00], [0x11, 0x20], [0x12, 0x10], [0x14, 0x40], [0x18, 0x80], [0x1f, 0xf0]]
  ) {
    outb(MCR, mcr);
    assert.equal(inb(MSR), msr, `MCR 0x${mcr.toString(16)}`);
  }
  outb(MCR, 0x0b);
  assert.equal(inb(MSR), 0xb0, "outside loopback the modem lines are DCD | DSR | CTS");
  outb(THR, 0x33);
  assert.deepEqual(sent, [0x33]);
});

Deno.test("UART: onReadyToReceive after each RBR read, canReceive for flow control", () => {
  let ready = 0;
  const { as, inb, outb, uart } = setup({ onReadyToReceive: () => ready++ });
  using _ = as;
  assert.equal(uart.canReceive(), 1);
  uart.receive([7]);
  assert.equal(uart.canReceive(), 0);
  assert.equal(inb(RBR), 7);
  assert.equal(ready, 1);
  outb(MCR, 0x10);
  outb(THR, 1);
  inb(RBR);
  assert.equal(ready, 1, "not in loopback");
});

Deno.test("UART: IRQ edges only on changes; reset lowers the line", () => {
  const { as, inb, outb, irq, uart } = setup();
  using _ = as;
  outb(IER, 0x0f);
  outb(IER, 0x0f);
  uart.receive([1]);
  uart.receive([2]);
  inb(LSR);
  inb(MSR);
  inb(IIR);
  inb(RBR);
  outb(THR, 1);
  assert.equal(irq.redundantCalls, 0);
  assert.equal(irq.level, true);
  uart.reset();
  assert.equal(irq.level, false);
  assert.equal(inb(IER), 0);
  assert.equal(irq.redundantCalls, 0);
});

Deno.test("UART: region 'serial' is 8 ports at the base; other bases work; sizes are split to bytes", () => {
  const { io, as } = setup();
  using _ = as;
  const com2 = new Uart16550({ base: COM2_PORT });
  com2.map(io);
  assert.equal(com2.region.name, "serial");
  assert.equal(com2.region.size, 8n);
  assert.equal(as.read(COM2_PORT + 5, 1).value, 0x60n);
  // A 4-byte read at the base: RBR, IER, IIR, LCR.
  assert.deepEqual(as.read(COM2_PORT, 4), { value: 0x00_01_00_00n, result: MemTxResult.OK });
  assert.throws(() => new Uart16550({ base: 0xfffc }), RangeError);
  assert.throws(() => new Uart16550({ rxTimeout: "later" as "manual" }), RangeError);
});

// ---- Device state (issue 11) ----

type UartOp =
  | { read: number }
  | { write: number; value: number }
  | { receive: number[] }
  | { break: true }
  | { timeout: true };

const uartOp: fc.Arbitrary<UartOp> = fc.oneof(
  fc.record({ read: fc.integer({ min: 0, max: 7 }) }),
  fc.record({
    write: fc.integer({ min: 0, max: 7 }),
    // Bias toward values that matter: DLAB, FIFO enable/clear with trigger levels, loopback, IER bits.
    value: fc.oneof(
      fc.integer({ min: 0, max: 0xff }),
      fc.constantFrom(0x80, 0x03, 0xc7, 0x07, 0x01, 0x10, 0x0f),
    ),
  }),
  fc.record({ receive: fc.array(fc.integer({ min: 0, max: 0xff }), { maxLength: 20 }) }),
  fc.constant({ break: true as const }),
  fc.constant({ timeout: true as const }),
);

function uartHarness(rxTimeout: "immediate" | "manual"): StateHarness<UartOp> {
  const irq = new RecordingIrqLine();
  const events: string[] = [];
  const uart = new Uart16550({
    irq,
    rxTimeout,
    transmit: (b) => events.push(`tx ${b}`),
    onReadyToReceive: () => events.push("ready"),
  });
  return {
    device: uart,
    step(op) {
      if ("read" in op) return uart.read(op.read);
      if ("write" in op) uart.write(op.write, op.value);
      else if ("receive" in op) uart.receive(op.receive);
      else if ("break" in op) uart.receiveBreak();
      else uart.characterTimeout();
      return [uart.rxCount, uart.canReceive()];
    },
    observe: () => [irq.level, uart.irqLevel, events.splice(0)],
  };
}

Deno.test("UART state: a loaded UART behaves as the saved one, in both timeout modes", () => {
  checkRoundTrip(() => uartHarness("immediate"), uartOp);
  checkRoundTrip(() => uartHarness("manual"), uartOp);
});

Deno.test("UART state: FIFO contents, pending interrupt and loopback survive; the line is re-driven", () => {
  const a = uartHarness("immediate");
  const uart = a.device as Uart16550;
  uart.write(2, 0xc7); // FIFOs on, trigger 14
  uart.write(1, 0x01); // RDI
  uart.write(4, 0x1f); // loopback
  uart.write(0, 0x55); // loops back into the FIFO
  uart.receive([1, 2, 3]);
  uart.write(7, 0x5a);
  assert.equal(uart.irqLevel, true, "character timeout pending");
  const b = uartHarness("immediate");
  b.device.loadState(uart.saveState());
  assert.deepEqual(b.observe(), [true, true, []]);
  assert.deepEqual([0, 0, 0, 0].map(() => (b.device as Uart16550).read(0)), [0x55, 1, 2, 3]);
  assert.equal((b.device as Uart16550).read(7), 0x5a);
  assert.equal((b.device as Uart16550).read(6), 0xf0, "loopback: MSR follows MCR");
});

Deno.test("UART state: bad states are refused by field and leave the UART unchanged", () => {
  const h = uartHarness("immediate");
  for (
    const op of [{ write: 2, value: 0xc1 }, { write: 1, value: 0x0f }, { receive: [9, 8, 7] }] as UartOp[]
  ) {
    h.step(op);
  }
  assert.ok(checkBadStates(h, "uart@0x3f8") > 30);
  const state = h.device.saveState();
  for (const [field, value] of [["ier", 0x10], ["fcr", 0x02], ["mcr", 0x20], ["lcr", 0x100]] as const) {
    assert.throws(() => h.device.loadState({ ...state, [field]: value }), {
      name: "DeviceStateError",
      message: new RegExp(`^uart@0x3f8: state field "${field}"`),
    });
  }
  assert.throws(
    () => h.device.loadState({ ...state, rxFifo: new Uint8Array(17) }),
    /uart@0x3f8: state field "rxFifo" has 17 bytes, more than 16/,
  );
  assert.deepEqual(h.device.saveState(), state);
});
