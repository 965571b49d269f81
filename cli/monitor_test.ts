import assert from "node:assert/strict";
import { commandsOver, fakeMachine } from "./_monitor_fakes.ts";
import { runMonitorCommand } from "./monitor.ts";
import { MonitorCommands } from "./monitor_commands.ts";
import { runQmpCommand } from "./qmp_commands.ts";

Deno.test("system_powerdown presses the power button once; silent when the guest listens, as QEMU", () => {
  const listening = fakeMachine(true);
  assert.deepEqual(runMonitorCommand(commandsOver(listening).commands, "system_powerdown"), {
    output: "",
    quit: false,
  });
  assert.equal(listening.presses.length, 1);
  const deaf = fakeMachine(false);
  const result = runMonitorCommand(commandsOver(deaf).commands, "  system_powerdown ");
  assert.equal(result.quit, false);
  assert.match(result.output, /^system_powerdown: the guest has not enabled the ACPI power button; .*\n$/);
  assert.equal(deaf.presses.length, 1);
});

Deno.test("help lists system_powerdown, stop and cont", () => {
  const help = runMonitorCommand(commandsOver(fakeMachine()).commands, "help").output;
  assert.match(help, /^system_powerdown /m);
  assert.match(help, /^stop \| cont/m);
});

Deno.test("monitor: info pci prints the machine's functions; an unknown item in QEMU's words", () => {
  const { commands } = commandsOver(
    fakeMachine(true, { infoPci: () => "  Bus  0, device   0, function 0:\n" }),
  );
  assert.equal(runMonitorCommand(commands, "info pci").output, "  Bus  0, device   0, function 0:\n");
  assert.equal(runMonitorCommand(commands, "info  bogus").output, "unknown command: 'info bogus'\n");
  assert.match(runMonitorCommand(commands, "help").output, /info pci/);
});

Deno.test("monitor: info pic prints the machine's 8259s and IOAPIC; a machine without them has no such item", () => {
  const { commands } = commandsOver(fakeMachine(true, { infoPic: () => "pic0: irr=00\nioapic0: ver=0x11" }));
  assert.equal(runMonitorCommand(commands, "info pic").output, "pic0: irr=00\nioapic0: ver=0x11\n");
  assert.match(runMonitorCommand(commands, "help").output, /info pic /);
  const bare = commandsOver(fakeMachine(true)).commands;
  assert.equal(runMonitorCommand(bare, "info pic").output, "unknown command: 'info pic'\n");
});

Deno.test("monitor: stop, cont, system_reset and quit are the shared commands, with QMP's events", () => {
  const { commands, events, ends } = commandsOver(fakeMachine());
  assert.equal(runMonitorCommand(commands, "info status").output, "VM status: running\n");
  runMonitorCommand(commands, "stop");
  runMonitorCommand(commands, "stop"); // already stopped: no second event, as QEMU
  assert.equal(runMonitorCommand(commands, "info status").output, "VM status: paused\n");
  runMonitorCommand(commands, "system_reset");
  assert.equal(runMonitorCommand(commands, "info status").output, "VM status: paused (prelaunch)\n");
  runMonitorCommand(commands, "c");
  assert.ok(runMonitorCommand(commands, "quit").quit);
  assert.deepEqual(events, [
    { name: "STOP" },
    { name: "RESET", data: { guest: false, reason: "host-qmp-system-reset" } },
    { name: "RESUME" },
    { name: "SHUTDOWN", data: { guest: false, reason: "host-qmp-quit" } },
  ]);
  assert.deepEqual(ends, ["reset", "quit"]);
});

Deno.test("monitor: memsave and pmemsave write what the machine reads; an unmapped page names the range", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const { commands } = commandsOver(fakeMachine());
    assert.equal(runMonitorCommand(commands, `pmemsave 0x10 4 ${dir}/p`).output, "");
    assert.deepEqual(Deno.readFileSync(`${dir}/p`), Uint8Array.of(0x10, 0x11, 0x12, 0x13));
    assert.equal(runMonitorCommand(commands, `memsave 0xfff 2 ${dir}/v`).output, "");
    assert.deepEqual(Deno.readFileSync(`${dir}/v`), Uint8Array.of(0xff, 0x00)); // 0x100fff, 0x101000
    assert.equal(
      runMonitorCommand(commands, `memsave 0xffff 2 ${dir}/v`).output,
      "Error: Invalid addr 0x000000000000ffff/size 2 specified\n",
    );
    assert.equal(
      runMonitorCommand(commands, `pmemsave 0 1 ${dir}/no/such`).output,
      `Error: Could not open '${dir}/no/such': No such file or directory\n`,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("monitor: under -no-reboot a system_reset is QEMU's SHUTDOWN with the reset's reason, and ends the run", () => {
  const events: unknown[] = [];
  const ends: string[] = [];
  const commands = new MonitorCommands(fakeMachine(), {
    event: (name, data) => void events.push({ name, data }),
    end: (kind) => void ends.push(kind),
    reboot: false,
  });
  runMonitorCommand(commands, "system_reset");
  assert.deepEqual(events, [{ name: "SHUTDOWN", data: { guest: false, reason: "host-qmp-system-reset" } }]);
  assert.deepEqual(ends, ["quit"]);
});

Deno.test("snapshot save: the monitor's line and QMP's x-kvmts-snapshot-save return; bad arguments refused", () => {
  const asked: [string, boolean][] = [];
  const { commands } = commandsOver(fakeMachine(true, {
    snapshot: (dir, diff) => {
      asked.push([dir, diff]);
      if (dir === "/full") throw new Error("/full: No space left on device\nsecond line");
      return { kind: diff ? "diff" : "full", dir, pages: 7, stateBytes: 4096 };
    },
  }));
  assert.equal(
    runMonitorCommand(commands, "snapshot save /s --diff").output,
    "snapshot: diff snapshot in /s: 7 pages of memory, 4096 bytes of state\n",
  );
  assert.deepEqual(runQmpCommand(commands, "x-kvmts-snapshot-save", { dir: "/q" }), {
    kind: "full",
    dir: "/q",
    pages: 7,
    "state-bytes": 4096,
  });
  assert.equal(
    (runQmpCommand(commands, "x-kvmts-snapshot-save", { dir: "/q", diff: true }) as { kind: string }).kind,
    "diff",
  );
  assert.deepEqual(asked, [["/s", true], ["/q", false], ["/q", true]]);
  const refused = (args: Record<string, unknown>, message: RegExp) =>
    assert.throws(() => runQmpCommand(commands, "x-kvmts-snapshot-save", args as never), { message });
  refused({}, /^Parameter 'dir' is missing$/);
  refused({ dir: "/q", diff: 1 }, /Invalid parameter type for 'diff', expected: boolean/);
  refused({ dir: "/q", keep: true }, /Parameter 'keep' is unexpected/);
  refused({ dir: "/full" }, /^\/full: No space left on device$/);
  assert.equal(asked.length, 4); // only the last one reached the machine
  assert.match(runMonitorCommand(commands, "snapshot save").output, /usage: snapshot save DIR \[--diff\]/);
  const { commands: none } = commandsOver(fakeMachine());
  assert.throws(() => runQmpCommand(none, "x-kvmts-snapshot-save", { dir: "/q" }), /cannot take snapshots/);
  assert.ok(
    (runQmpCommand(commands, "query-commands", {}) as { name: string }[]).some((c) =>
      c.name === "x-kvmts-snapshot-save"
    ),
  );
});

Deno.test("query-rx-filter: each card's filter in QEMU 7.2's shape; a netdev or an unknown name refused in its words", async () => {
  const { VirtioNetRxFilter, VirtioNetCtrlMac, VirtioNetCtrlVlan } = await import(
    "../devices/virtio/virtio_net_ctrl.ts"
  );
  const first = new VirtioNetRxFilter([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
  first.setVlanFiltering(true);
  first.rxMode(0, new Uint8Array([0])); // what Linux sends when eth0 comes up
  const le32 = (n: number) => [n, 0, 0, 0];
  const uni = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
  const multi = [[0x33, 0x33, 0, 0, 0, 1], [1, 0, 0x5e, 0, 0, 1]];
  first.macCommand(
    VirtioNetCtrlMac.TABLE_SET,
    new Uint8Array([...le32(2), ...uni.flat(), ...le32(2), ...multi.flat()]),
  );
  first.vlanCommand(VirtioNetCtrlVlan.ADD, new Uint8Array([40, 0]));
  first.vlanCommand(VirtioNetCtrlVlan.ADD, new Uint8Array([5, 0]));
  const second = new VirtioNetRxFilter([0x52, 0x54, 0, 0x12, 0x34, 0x57]);
  second.setVlanFiltering(false);
  second.rxMode(3, new Uint8Array([1])); // NOMULTI
  second.rxMode(1, new Uint8Array([1])); // ALLMULTI: NOMULTI wins
  second.rxMode(5, new Uint8Array([1])); // NOBCAST
  const { commands } = commandsOver(fakeMachine(true, {
    rxFilters: () => [
      {
        name: "nic0",
        id: "nic0",
        path: "/machine/peripheral/nic0/virtio-backend",
        filter: first,
        vlanFiltering: true,
      },
      {
        name: "virtio-net-pci.1",
        path: "/machine/peripheral-anon/device[0]/virtio-backend",
        filter: second,
        vlanFiltering: false,
      },
    ],
    netdevIds: () => ["n0", "n1"],
  }));
  const all = runQmpCommand(commands, "query-rx-filter", {}) as Record<string, unknown>[];
  assert.deepEqual(all[0], {
    name: "nic0",
    promiscuous: false,
    multicast: "normal",
    unicast: "normal",
    vlan: "normal",
    "broadcast-allowed": false, // QEMU reports the no-broadcast flag here
    "multicast-overflow": false,
    "unicast-overflow": false,
    "main-mac": "52:54:00:12:34:56",
    "vlan-table": [40, 5], // by id, highest first (QEMU prepends while it walks the ids up)
    "unicast-table": ["02:00:00:00:00:02", "02:00:00:00:00:01"],
    "multicast-table": ["01:00:5e:00:00:01", "33:33:00:00:00:01"],
  });
  const other = all[1];
  assert.deepEqual(
    [other.promiscuous, other.multicast, other.unicast, other.vlan, other["broadcast-allowed"]],
    [true, "none", "normal", "all", true],
  );
  assert.equal(
    (other["vlan-table"] as number[]).length,
    4096,
    "without CTRL_VLAN QEMU's table holds every id",
  );
  assert.deepEqual(runQmpCommand(commands, "query-rx-filter", { name: "virtio-net-pci.1" }), [other]);
  assert.throws(
    () => runQmpCommand(commands, "query-rx-filter", { name: "n1" }),
    /^Error: net client\(n1\) isn't a NIC$/,
  );
  assert.throws(
    () => runQmpCommand(commands, "query-rx-filter", { name: "x" }),
    /invalid net client name: x/,
  );
  const { commands: bare } = commandsOver(fakeMachine());
  assert.deepEqual(runQmpCommand(bare, "query-rx-filter", {}), []);
});

Deno.test("NIC_RX_FILTER_CHANGED: once per card until query-rx-filter reads that card's filter again, as QEMU", async () => {
  const { VirtioNetRxFilter } = await import("../devices/virtio/virtio_net_ctrl.ts");
  const filter = new VirtioNetRxFilter([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
  const nics = [
    {
      name: "nic0",
      id: "nic0",
      path: "/machine/peripheral/nic0/virtio-backend",
      filter,
      vlanFiltering: true,
    },
    {
      name: "virtio-net-pci.1",
      path: "/machine/peripheral-anon/device[1]/virtio-backend",
      filter,
      vlanFiltering: true,
    },
  ];
  const events: [string, unknown][] = [];
  const commands = new MonitorCommands(fakeMachine(true, { rxFilters: () => nics }), {
    event: (name, data) => void events.push([name, data]),
    end: () => {},
  });
  commands.rxFilterChanged(0);
  commands.rxFilterChanged(0); // quiet until read
  commands.rxFilterChanged(1);
  assert.deepEqual(events, [
    ["NIC_RX_FILTER_CHANGED", { name: "nic0", path: "/machine/peripheral/nic0/virtio-backend" }],
    ["NIC_RX_FILTER_CHANGED", { path: "/machine/peripheral-anon/device[1]/virtio-backend" }], // no id, no name
  ]);
  runQmpCommand(commands, "query-rx-filter", { name: "nic0" }); // arms nic0 only
  commands.rxFilterChanged(1);
  commands.rxFilterChanged(0);
  assert.equal(events.length, 3);
  assert.equal((events[2][1] as { name: string }).name, "nic0");
  runQmpCommand(commands, "query-rx-filter", {}); // arms both
  commands.rxFilterChanged(1);
  assert.equal(events.length, 4);
});

Deno.test("announce-self: QMP's arguments checked as QEMU's visitor does, HMP's defaults and names", () => {
  const asked: unknown[] = [];
  const { commands } = commandsOver(fakeMachine(true, {
    announceSelf: (params, options) => {
      if (options.id === "broken") throw new Error("timer_create: EAGAIN\nmore");
      asked.push({ ...params, ...options });
    },
  }));
  const base = { initial: 50, max: 550, rounds: 3, step: 100 };
  assert.deepEqual(runQmpCommand(commands, "announce-self", { ...base, interfaces: ["nic0"], id: "x" }), {});
  const refused = (args: Record<string, unknown>, message: RegExp) =>
    assert.throws(() => runQmpCommand(commands, "announce-self", args as never), { message });
  refused({ initial: 50, max: 550, rounds: 3 }, /^Parameter 'step' is missing$/);
  refused({ ...base, rounds: "3" }, /^Invalid parameter type for 'rounds', expected: integer$/);
  refused({ ...base, interfaces: "nic0" }, /^Invalid parameter type for 'interfaces', expected: array$/);
  refused(
    { ...base, interfaces: ["nic0", 7] },
    /^Invalid parameter type for 'interfaces\[1\]', expected: string$/,
  );
  refused({ ...base, rounds: -1 }, /^Parameter 'rounds' must be from 0 to 1000$/);
  refused({ ...base, step: 0 }, /^Parameter 'step' must be from 1 to 10000$/);
  refused({ ...base, initial: 2 ** 60 }, /^Parameter 'initial' must be from 0 to 100000$/);
  refused({ ...base, id: "broken" }, /^timer_create: EAGAIN$/);
  refused({ ...base, extra: 1 }, /^Parameter 'extra' is unexpected$/);
  assert.equal(runMonitorCommand(commands, "announce_self").output, "");
  assert.equal(runMonitorCommand(commands, "announce_self nic0,nic1 t").output, "");
  assert.match(
    runMonitorCommand(commands, "announce_self a b c").output,
    /usage: announce_self \[NICS\] \[ID\]/,
  );
  assert.deepEqual(asked, [
    { ...base, interfaces: ["nic0"], id: "x" },
    { initial: 50, max: 550, rounds: 5, step: 100 }, // QEMU's migration defaults
    { initial: 50, max: 550, rounds: 5, step: 100, interfaces: ["nic0", "nic1"], id: "t" },
  ]);
  assert.ok(
    (runQmpCommand(commands, "query-commands", {}) as { name: string }[]).some((c) =>
      c.name === "announce-self"
    ),
  );
});
