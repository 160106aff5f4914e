"""The pure domain: the workflow definition, applicant and usage types, fields and forms,
identifiers, card profiles and step data. No I/O, no database, web, CLI or reader imports.
"""
