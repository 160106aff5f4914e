"""One service per capability (registration, accounts, login, customs, Turnkey, renewal, trust,
mail, rate limits, …), each owning its transactions; the only layer that uses ``engine.store``.
"""
