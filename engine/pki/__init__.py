"""Pure certificate work: the DER reader, certificate parsing and classification, trust paths,
CRL indexes, OCSP, CMS, signature helpers and the card check. No I/O; depends only on
``engine.core``.
"""
