-- A published (or deprecated) version never changes its content and is never deleted; only its
-- state may move on from published to deprecated.
CREATE TRIGGER artifact_versions_immutable BEFORE UPDATE ON artifact_versions
WHEN OLD.state <> 'draft' AND (
    NEW.sha256 <> OLD.sha256 OR NEW.payload_key <> OLD.payload_key OR NEW.size <> OLD.size
    OR NEW.number <> OLD.number OR NEW.artifact_id <> OLD.artifact_id OR NEW.version_tag <> OLD.version_tag
    OR NEW.findings <> OLD.findings OR NEW.state = 'draft')
BEGIN SELECT RAISE(ABORT, 'published artifact versions are immutable'); END;
CREATE TRIGGER artifact_versions_no_delete BEFORE DELETE ON artifact_versions
WHEN OLD.state <> 'draft'
BEGIN SELECT RAISE(ABORT, 'published artifact versions are immutable'); END;
CREATE TRIGGER version_requires_frozen_update BEFORE UPDATE ON version_requires
WHEN (SELECT state FROM artifact_versions WHERE id = OLD.version_id) <> 'draft'
BEGIN SELECT RAISE(ABORT, 'published artifact versions are immutable'); END;
CREATE TRIGGER version_requires_frozen_delete BEFORE DELETE ON version_requires
WHEN (SELECT state FROM artifact_versions WHERE id = OLD.version_id) <> 'draft'
BEGIN SELECT RAISE(ABORT, 'published artifact versions are immutable'); END;
CREATE TRIGGER version_requires_frozen_insert BEFORE INSERT ON version_requires
WHEN (SELECT state FROM artifact_versions WHERE id = NEW.version_id) <> 'draft'
BEGIN SELECT RAISE(ABORT, 'published artifact versions are immutable'); END;
CREATE TRIGGER bundles_no_update BEFORE UPDATE ON bundles
BEGIN SELECT RAISE(ABORT, 'bundles are immutable'); END;
CREATE TRIGGER bundles_no_delete BEFORE DELETE ON bundles
BEGIN SELECT RAISE(ABORT, 'bundles are immutable'); END;
