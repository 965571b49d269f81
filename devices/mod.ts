/**
 * Device models of the PC board: pure state machines behind port-I/O regions named as QEMU names
 * them, seeing only memory-API types, injected interrupt lines and injected callbacks.
 *
 * @module
 */

export { type IrqLine, IrqOutput, RecordingIrqLine } from "./irq_line.ts";
export {
  DeviceStateError,
  isPlainState,
  type LengthLimit,
  type Snapshottable,
  type StateObject,
  StateReader,
  type StateValue,
} from "./device_state.ts";
export { type PortDevice } from "./port_device.ts";
export {
  COM1_IRQ,
  COM1_PORT,
  COM2_PORT,
  COM3_PORT,
  COM4_PORT,
  type RxTimeoutMode,
  Uart16550,
  type Uart16550Options,
  UART_FIFO_SIZE,
  UART_REGION_SIZE,
} from "./uart_16550.ts";
export {
  I8042,
  I8042_AUX_IRQ,
  I8042_COMMAND_PORT,
  I8042_DATA_PORT,
  I8042_KEYBOARD_IRQ,
  type I8042Options,
} from "./i8042.ts";
export {
  I8259,
  type I8259Options,
  ISA_NUM_IRQS,
  PIC_CASCADE_IRQ,
  PIC_ELCR_PORT,
  PIC_MASTER_ELCR_MASK,
  PIC_MASTER_PORT,
  PIC_SLAVE_ELCR_MASK,
  PIC_SLAVE_PORT,
} from "./i8259.ts";
export {
  I8254,
  type I8254Options,
  PIT_BASE,
  PIT_CHANNELS,
  PIT_FREQ,
  PIT_IO_SIZE,
  PIT_MAX_REPLAYED_TRANSITIONS,
  type PitChannelInfo,
  pitTicks,
  pitTicksToNs,
} from "./i8254.ts";
export { PcSpeaker, type PcSpeakerOptions, PCSPK_PORT } from "./pc_speaker.ts";
export {
  Ioapic,
  IOAPIC_DEFAULT_BASE,
  IOAPIC_DEFAULT_VERSION,
  IOAPIC_DELIVERY_MODE_SHIFT,
  IOAPIC_DELIVERY_STATUS_BIT,
  IOAPIC_DEST_MODE_BIT,
  IOAPIC_EOI_OFFSET,
  IOAPIC_IOREGSEL_OFFSET,
  IOAPIC_IOWIN_OFFSET,
  IOAPIC_MASKED_BIT,
  IOAPIC_MSI_ADDRESS_BASE,
  IOAPIC_PINS,
  IOAPIC_POLARITY_BIT,
  IOAPIC_REG_ARB,
  IOAPIC_REG_ID,
  IOAPIC_REG_REDTBL_BASE,
  IOAPIC_REG_VER,
  IOAPIC_REGION_SIZE,
  IOAPIC_REMOTE_IRR_BIT,
  IOAPIC_STORM_DELAY_MS,
  IOAPIC_STORM_EOI_COUNT,
  IOAPIC_TRIGGER_LEVEL_BIT,
  IOAPIC_VECTOR_MASK,
  type IoapicDelivery,
  IoapicDeliveryMode,
  type IoapicMsiMessage,
  type IoapicOptions,
  type IoapicRoute,
} from "./ioapic.ts";
export { formatIoapicInfo, type IoapicInfo } from "./ioapic_info.ts";
export { formatPicInfo, type PicInfo } from "./pic_info.ts";
export { Port92, PORT92_PORT, type Port92Options } from "./port92.ts";
export {
  RESET_CONTROL_PORT,
  RESET_CONTROL_PRIORITY,
  ResetControl,
  type ResetControlOptions,
} from "./reset_control.ts";
export { CMOS_DATA_PORT, CMOS_INDEX_PORT, CMOS_SIZE, CmosRtc, type CmosRtcOptions } from "./cmos_rtc.ts";
export {
  PCI_CONFIG_HEADER_SIZE,
  PCI_CONFIG_SPACE_SIZE,
  PciConfig,
  PciConfigSpace,
  type PciDevice,
  type PciIdentity,
} from "./pci_device.ts";
export {
  PCI_BAR0_OFFSET,
  PCI_BAR_COUNT,
  PCI_CAPABILITY_LIST_OFFSET,
  PciBarType,
  type PciBusSpaces,
  PciCommand,
  PciFunction,
  type PciFunctionOptions,
  PciStatus,
} from "./pci_function.ts";
export {
  Msix,
  MSIX_CAP_SIZE,
  MSIX_ENABLE_BIT,
  MSIX_ENTRY_SIZE,
  MSIX_EXCLUSIVE_BAR_SIZE,
  MSIX_EXCLUSIVE_PBA_OFFSET,
  MSIX_MASKALL_BIT,
  MSIX_MAX_VECTORS,
  MSIX_VECTOR_MASK_BIT,
  type MsixOptions,
  type MsixVectorState,
  PCI_CAP_ID_MSIX,
} from "./msix.ts";
export {
  I440FX_CLASS_CODE,
  I440FX_COREBOOT_RAM_SIZE_OFFSET,
  I440FX_DEVICE_ID,
  I440FX_PAM_COUNT,
  I440FX_PAM_OFFSET,
  I440FX_REVISION,
  I440FX_SMRAM_AT_POWER_ON,
  I440FX_SMRAM_OFFSET,
  I440FX_VENDOR_ID,
  I440fxHostBridge,
  type I440fxHostBridgeOptions,
} from "./i440fx_host_bridge.ts";
export {
  PCI_CONFIG_ADDRESS_PORT,
  PCI_CONFIG_DATA_PORT,
  PCI_CONFIG_ENABLE_BIT,
  type PciAddress,
  PciHost,
} from "./pci_host.ts";
export { Port80, PORT80_PORT } from "./port80.ts";
export {
  DEBUG_EXIT_PORT,
  DEBUG_EXIT_SIZE,
  IsaDebugExit,
  type IsaDebugExitOptions,
} from "./isa_debug_exit.ts";
// Memory-API types that the devices' public types refer to (every device is a set of memory
// regions), so that this module's documentation is complete on its own.
export type {
  AccessConstraints,
  AddrInput,
  Endianness,
  MemoryRegion,
  MemoryRegionOps,
  RamBacking,
  RegionKind,
  ValidConstraints,
} from "../memory/mod.ts";
export {
  ACPI_GPE0_BASE,
  ACPI_GPE0_SIZE,
  ACPI_PM_BASE,
  ACPI_PM_IO_SIZE,
  ACPI_PM_TIMER_HZ,
  ACPI_SLP_TYP_S5,
  AcpiPm,
  type AcpiPmOptions,
  PM1_BM_STS_BIT,
  PM1_CNT_SCI_EN_BIT,
  PM1_CNT_SLP_EN_BIT,
  PM1_GBL_BIT,
  PM1_PWRBTN_BIT,
  PM1_RTC_BIT,
  PM1_SLPBTN_BIT,
  PM1_TMR_BIT,
  PM1_WAK_STS_BIT,
} from "./acpi_pm.ts";
export type { DeviceTimers } from "./device_timers.ts";
export {
  ANNOUNCE_FRAME_SIZE,
  ANNOUNCE_LIMITS,
  announceDelay,
  type AnnounceParameters,
  announceProblem,
  DEFAULT_ANNOUNCE,
  selfAnnounceFrame,
} from "./net_announce.ts";
