"""plan: who gets what. Eligibility, sticky experiment arms (GrowthBook hash v2), content sources,
the rules engine, the editorial fallback and send times, for every user of an edition.

`planner.plan_edition` plans an edition from its inputs; `context` prepares the edition once,
`user.plan_user` decides one user, `output` writes the plan and explains a user's trace.
"""
