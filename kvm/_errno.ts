/**
 * The errno values of Linux x86-64 that KVM, mmap and open return in practice, named once: every
 * file of the KVM layer that compares an errno imports its constant from here, and
 * {@link ERRNO_NAMES} (the symbolic name and `strerror` text of each) is built from the same list.
 *
 * @module
 */

/** Operation not permitted. */
export const EPERM = 1;
/** No such file or directory. */
export const ENOENT = 2;
/** No such process. */
export const ESRCH = 3;
/** Interrupted system call. */
export const EINTR = 4;
/** Input/output error. */
export const EIO = 5;
/** No such device or address. */
export const ENXIO = 6;
/** Argument list too long. */
export const E2BIG = 7;
/** Exec format error. */
export const ENOEXEC = 8;
/** Bad file descriptor. */
export const EBADF = 9;
/** Resource temporarily unavailable. */
export const EAGAIN = 11;
/** Cannot allocate memory. */
export const ENOMEM = 12;
/** Permission denied. */
export const EACCES = 13;
/** Bad address. */
export const EFAULT = 14;
/** Device or resource busy. */
export const EBUSY = 16;
/** File exists. */
export const EEXIST = 17;
/** No such device. */
export const ENODEV = 19;
/** Not a directory. */
export const ENOTDIR = 20;
/** Is a directory. */
export const EISDIR = 21;
/** Invalid argument. */
export const EINVAL = 22;
/** Too many open files in system. */
export const ENFILE = 23;
/** Too many open files. */
export const EMFILE = 24;
/** Inappropriate ioctl for device. */
export const ENOTTY = 25;
/** File too large. */
export const EFBIG = 27;
/** No space left on device. */
export const ENOSPC = 28;
/** Read-only file system. */
export const EROFS = 30;
/** Numerical result out of range. */
export const ERANGE = 34;
/** File name too long. */
export const ENAMETOOLONG = 36;
/** No locks available. */
export const ENOLCK = 37;
/** Function not implemented. */
export const ENOSYS = 38;
/** Value too large for defined data type. */
export const EOVERFLOW = 75;
/** Operation not supported. */
export const EOPNOTSUPP = 95;
/** Connection timed out. */
export const ETIMEDOUT = 110;
/** Memory page has hardware error. */
export const EHWPOISON = 133;

/** Symbolic name and `strerror` text of each errno above (Linux, x86-64). */
export const ERRNO_NAMES: Readonly<Record<number, readonly [code: string, description: string]>> = {
  [EPERM]: ["EPERM", "Operation not permitted"],
  [ENOENT]: ["ENOENT", "No such file or directory"],
  [ESRCH]: ["ESRCH", "No such process"],
  [EINTR]: ["EINTR", "Interrupted system call"],
  [EIO]: ["EIO", "Input/output error"],
  [ENXIO]: ["ENXIO", "No such device or address"],
  [E2BIG]: ["E2BIG", "Argument list too long"],
  [ENOEXEC]: ["ENOEXEC", "Exec format error"],
  [EBADF]: ["EBADF", "Bad file descriptor"],
  [EAGAIN]: ["EAGAIN", "Resource temporarily unavailable"],
  [ENOMEM]: ["ENOMEM", "Cannot allocate memory"],
  [EACCES]: ["EACCES", "Permission denied"],
  [EFAULT]: ["EFAULT", "Bad address"],
  [EBUSY]: ["EBUSY", "Device or resource busy"],
  [EEXIST]: ["EEXIST", "File exists"],
  [ENODEV]: ["ENODEV", "No such device"],
  [ENOTDIR]: ["ENOTDIR", "Not a directory"],
  [EISDIR]: ["EISDIR", "Is a directory"],
  [EINVAL]: ["EINVAL", "Invalid argument"],
  [ENFILE]: ["ENFILE", "Too many open files in system"],
  [EMFILE]: ["EMFILE", "Too many open files"],
  [ENOTTY]: ["ENOTTY", "Inappropriate ioctl for device"],
  [EFBIG]: ["EFBIG", "File too large"],
  [ENOSPC]: ["ENOSPC", "No space left on device"],
  [EROFS]: ["EROFS", "Read-only file system"],
  [ERANGE]: ["ERANGE", "Numerical result out of range"],
  [ENAMETOOLONG]: ["ENAMETOOLONG", "File name too long"],
  [ENOLCK]: ["ENOLCK", "No locks available"],
  [ENOSYS]: ["ENOSYS", "Function not implemented"],
  [EOVERFLOW]: ["EOVERFLOW", "Value too large for defined data type"],
  [EOPNOTSUPP]: ["EOPNOTSUPP", "Operation not supported"],
  [ETIMEDOUT]: ["ETIMEDOUT", "Connection timed out"],
  [EHWPOISON]: ["EHWPOISON", "Memory page has hardware error"],
};
