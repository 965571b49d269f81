import assert from "node:assert/strict";
import { qmpEvent, qmpGreeting, QmpSession } from "./qmp_session.ts";
import { toQmpJson } from "./qmp_json.ts";

const replyOf = (s: QmpSession, input: unknown) => {
  const step = s.handle(input as never);
  return step.kind === "reply" ? toQmpJson(step.reply) : step;
};

Deno.test("qmp session: the greeting QEMU 7.2 sends, with our version", () => {
  assert.equal(
    toQmpJson(qmpGreeting()),
    '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "kvm-ts 0.1.0"}, "capabilities": ["oob"]}}',
  );
});

Deno.test("qmp session: negotiation first, then commands; the errors QEMU 7.2 gives (captured from it)", () => {
  const s = new QmpSession();
  assert.equal(
    replyOf(s, { execute: "query-status" }),
    `{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`,
  );
  assert.equal(
    replyOf(s, { execute: "qmp_capabilities", arguments: { enable: ["x"] } }),
    `{"error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'x'"}}`,
  );
  assert.equal(replyOf(s, { execute: "qmp_capabilities", id: 7 }), '{"return": {}, "id": 7}');
  assert.equal(
    replyOf(s, { execute: "qmp_capabilities" }),
    `{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}`,
  );
  assert.equal(
    replyOf(s, [1]),
    `{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}`,
  );
  assert.equal(
    replyOf(s, 123),
    `{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}`,
  );
  assert.equal(
    replyOf(s, { exec: 1 }),
    `{"error": {"class": "GenericError", "desc": "QMP input member 'exec' is unexpected"}}`,
  );
  assert.equal(
    replyOf(s, { execute: 1 }),
    `{"error": {"class": "GenericError", "desc": "QMP input member 'execute' must be a string"}}`,
  );
  assert.equal(
    replyOf(s, { execute: "stop", arguments: [] }),
    `{"error": {"class": "GenericError", "desc": "QMP input member 'arguments' must be an object"}}`,
  );
  assert.equal(
    replyOf(s, { execute: "stop", foo: 1, id: 5 }),
    `{"id": 5, "error": {"class": "GenericError", "desc": "QMP input member 'foo' is unexpected"}}`,
  );
  assert.equal(
    replyOf(s, { id: 1 }),
    `{"id": 1, "error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}`,
  );
  assert.equal(
    replyOf(s, { "exec-oob": "stop" }),
    `{"error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}`,
  );
  assert.deepEqual(s.handle({ execute: "stop", id: { x: [1] } }), {
    kind: "execute",
    execute: { name: "stop", args: {}, id: { x: [1] } },
  });
});

Deno.test("qmp session: with oob enabled, exec-oob of a command without OOB support", () => {
  const s = new QmpSession();
  s.handle({ execute: "qmp_capabilities", arguments: { enable: ["oob"] } });
  assert.equal(
    replyOf(s, { "exec-oob": "query-status", id: 3 }),
    `{"id": 3, "error": {"class": "GenericError", "desc": "The command query-status does not support OOB"}}`,
  );
});

Deno.test("qmp session: events carry seconds and microseconds", () => {
  assert.equal(
    toQmpJson(qmpEvent("RESET", { guest: false, reason: "host-qmp-system-reset" }, 1_796_253_617_885.018)),
    '{"timestamp": {"seconds": 1796253617, "microseconds": 885018}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}',
  );
});
