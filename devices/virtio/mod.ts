/**
 * virtio 1.x devices: split virtqueues that treat the guest as hostile, the device core (status,
 * features, needs-reset), the modern virtio-pci transport with MSI-X, and the virtio-rng,
 * virtio-blk and virtio-net device types. Pure: guest memory, interrupts, entropy, disks and the
 * network backend are injected.
 *
 * @module
 */

// The device-state API the models' saveState/prepareState use (devices/mod.ts exports it too), so that
// this module's documentation is complete on its own.
export {
  DeviceStateError,
  type Snapshottable,
  type StateObject,
  StateReader,
  type StateValue,
} from "../device_state.ts";
export {
  AddressSpaceGuestMemory,
  type GuestAddressSpace,
  type GuestMemory,
  type GuestMemoryCache,
} from "./guest_memory.ts";
export {
  type ChainPiece,
  DescriptorChain,
  RamSpans,
  VIRTIO_NO_VECTOR,
  VirtioProtocolError,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  type VirtqBuffer,
  Virtqueue,
  VIRTQUEUE_MAX_ELEMENTS,
  VIRTQUEUE_MAX_SIZE,
  type VirtqueueFeatures,
  vringNeedEvent,
} from "./virtqueue.ts";
export {
  VIRTIO_ISR_CONFIG,
  VIRTIO_ISR_QUEUE,
  VIRTIO_TRANSPORT_FEATURES,
  VirtioDevice,
  type VirtioDeviceModel,
  type VirtioDeviceOptions,
  VirtioFeature,
  VirtioStatus,
} from "./virtio_device.ts";
export {
  PCI_CAP_ID_VNDR,
  VIRTIO_PCI_MODERN_BAR,
  VIRTIO_PCI_MODERN_BAR_SIZE,
  VIRTIO_PCI_MODERN_DEVICE_ID_BASE,
  VIRTIO_PCI_MODERN_REVISION,
  VIRTIO_PCI_MSIX_BAR,
  VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER,
  VIRTIO_PCI_REGION_SIZE,
  VIRTIO_PCI_VENDOR_ID,
  VirtioPci,
  VirtioPciCapType,
  VirtioPciCommon,
  type VirtioPciOptions,
} from "./virtio_pci.ts";
export {
  VIRTIO_ID_RNG,
  VIRTIO_RNG_MAX_CHUNK,
  VIRTIO_RNG_QUEUE_SIZE,
  VirtioRng,
  type VirtioRngOptions,
} from "./virtio_rng.ts";
export {
  type BlockBacking,
  VIRTIO_BLK_CONFIG_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_QUEUE_SIZE,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_ID_BLOCK,
  VirtioBlk,
  VirtioBlkFeature,
  type VirtioBlkOptions,
  VirtioBlkRequest,
  VirtioBlkStatus,
} from "./virtio_blk.ts";
export {
  formatMac,
  VIRTIO_ID_NET,
  VIRTIO_NET_CONFIG_SIZE,
  VIRTIO_NET_CTRL_MAX_DATA,
  VIRTIO_NET_CTRL_QUEUE,
  VIRTIO_NET_CTRL_QUEUE_SIZE,
  VIRTIO_NET_DEFAULT_FEATURES,
  VIRTIO_NET_DEFAULT_MAC,
  VIRTIO_NET_FEATURE_PROPERTIES,
  VIRTIO_NET_HDR_SIZE,
  VIRTIO_NET_MAX_FRAME,
  VIRTIO_NET_QUEUE_SIZE,
  VIRTIO_NET_RX_QUEUE,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
  VIRTIO_NET_TX_QUEUE,
  VirtioNet,
  VirtioNetFeature,
  virtioNetFeatures,
  type VirtioNetOffloads,
  type VirtioNetOptions,
  type VirtioNetStats,
} from "./virtio_net.ts";
export {
  VIRTIO_NET_ERR,
  VIRTIO_NET_MAC_TABLE_ENTRIES,
  VIRTIO_NET_OK,
  VirtioNetCtrlClass,
  VirtioNetCtrlMac,
  VirtioNetCtrlRx,
  VirtioNetCtrlVlan,
  VirtioNetRxFilter,
  type VirtioNetRxFilterInfo,
} from "./virtio_net_ctrl.ts";
// Types of the parent folder and of memory/ that this module's public types name, so that its
// documentation is complete on its own.
export type {
  AccessConstraints,
  AddrInput,
  Endianness,
  IrqLine,
  MemoryRegion,
  MemoryRegionOps,
  Msix,
  MsixVectorState,
  PciBusSpaces,
  PciConfigSpace,
  PciDevice,
  PciFunction,
  PciFunctionOptions,
  PciIdentity,
  RamBacking,
  RegionKind,
  ValidConstraints,
} from "../mod.ts";
