"""DICOM helpers over pydicom. Importing the package installs the character set repair of
``charsets`` in every process that reads DICOM (server workers, API, workstation)."""

from lucent.dicom import charsets as _charsets  # noqa: F401  (installs on import)
