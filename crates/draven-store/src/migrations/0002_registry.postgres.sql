CREATE FUNCTION draven_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.state <> 'draft' THEN
            RAISE EXCEPTION 'published artifact versions are immutable';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.state <> 'draft' AND (
        NEW.sha256 <> OLD.sha256 OR NEW.payload_key <> OLD.payload_key OR NEW.size <> OLD.size
        OR NEW.number <> OLD.number OR NEW.artifact_id <> OLD.artifact_id OR NEW.version_tag <> OLD.version_tag
        OR NEW.findings <> OLD.findings OR NEW.state = 'draft') THEN
        RAISE EXCEPTION 'published artifact versions are immutable';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER artifact_versions_immutable BEFORE UPDATE OR DELETE ON artifact_versions
FOR EACH ROW EXECUTE FUNCTION draven_versions_immutable();

CREATE FUNCTION draven_requires_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v TEXT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT state INTO v FROM artifact_versions WHERE id = NEW.version_id;
    ELSE
        SELECT state INTO v FROM artifact_versions WHERE id = OLD.version_id;
    END IF;
    IF v IS NOT NULL AND v <> 'draft' THEN
        RAISE EXCEPTION 'published artifact versions are immutable';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER version_requires_frozen BEFORE INSERT OR UPDATE OR DELETE ON version_requires
FOR EACH ROW EXECUTE FUNCTION draven_requires_frozen();

CREATE FUNCTION draven_bundles_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'bundles are immutable';
END
$$;
CREATE TRIGGER bundles_immutable BEFORE UPDATE OR DELETE ON bundles
FOR EACH ROW EXECUTE FUNCTION draven_bundles_immutable();
