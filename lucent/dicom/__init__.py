"""DICOM helpers over pydicom. Importing the package installs the character set repair of
``charsets`` and the sequential-JPEG scan repair of ``jpeg_sequential_repair`` in every
process that reads DICOM (server workers, API, C-GET transcoders, workstation)."""

from lucent.dicom import charsets as _charsets  # noqa: F401  (installs on import)
from lucent.dicom import jpeg_sequential_repair as _jpeg_repair

_jpeg_repair.install()
