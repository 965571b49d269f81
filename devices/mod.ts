/**
 * Device models of the PC board: pure state machines behind port-I/O regions named as QEMU names
 * them, seeing only memory-API types, injected interrupt lines and injected callbacks.
 *
 * @module
 */

export * from "./irq_line.ts";
export * from "./port_device.ts";
export * from "./uart_16550.ts";
export * from "./i8042.ts";
export * from "./port92.ts";
export * from "./reset_control.ts";
export * from "./cmos_rtc.ts";
export * from "./pci_device.ts";
export * from "./i440fx_host_bridge.ts";
export * from "./pci_host.ts";
export * from "./port80.ts";
export * from "./isa_debug_exit.ts";
export * from "./acpi_pm.ts";
