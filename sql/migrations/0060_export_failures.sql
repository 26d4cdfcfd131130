-- A stored export whose files keep failing (404, bad checksums) is not re-used forever: each run
-- whose download of its batch had failures counts one here, and after a few the governor discards
-- the request and asks JSOC for a new one. New statuses (no schema change needed):
-- refused (a status-0 reply that failed validation: nothing of it was stored), abandoned (pending
-- past [transfer] export_max_hours: its records are asked for again) and discarded (its files
-- failed in too many runs: replaced by a new request).
ALTER TABLE export_requests ADD COLUMN file_failures INTEGER DEFAULT 0;
