"""The recommender domain: the world and its truth (:mod:`.world`), click models
(:mod:`.behavior`), slates (:mod:`.policy`), candidate retrieval (:mod:`.retrieval`), sharded
training (:mod:`.distributed`), the rankers (:mod:`.rankers`) and the domain on the loop
(:mod:`.domain`). Its config sections are in :mod:`.config`."""
