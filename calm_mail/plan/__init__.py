"""plan: who gets what. Eligibility, sticky experiment arms (GrowthBook hash v2), content sources,
the rules engine, the editorial fallback and send times, for every user of an edition."""
