-- ramanscreen results views (schema version 3). The one place the views are defined:
-- `ramanscreen.analytics.db.connect()` runs this file, and so can the duckdb shell:
--
--   duckdb -cmd "SET VARIABLE results_root = 'results'" -cmd ".read analytics/views.sql"
--
-- (without the SET, the root defaults to ./results). See docs/results.md.
--
-- Only *committed* runs are visible, as a consistent snapshot taken when this file is read:
-- `materials` is a temporary table copied from the commit records
-- (materials/.../run.parquet), and every other table reads exactly the data files those
-- records name (<table>/.../<write_id>.parquet). A crashed or in-flight write is never
-- listed, and a run rewritten while you query keeps showing one whole version. The writer
-- keeps superseded files for at least a minute (ramanscreen.tasks.results.STALE_GRACE_S); read this file
-- again (or reconnect) to see newer results.

SET VARIABLE results_root = COALESCE(getvariable('results_root'), 'results');

CREATE OR REPLACE TEMP TABLE materials AS
SELECT * FROM read_parquet(
    getvariable('results_root') || '/materials/campaign=*/material=*/run_id=*/run.parquet',
    hive_partitioning = true, union_by_name = true,
    hive_types = {'campaign': VARCHAR, 'material': VARCHAR, 'run_id': VARCHAR});
-- Columns added in schema version 2 (a root holding only version-1 runs has none of them: NULL).
ALTER TABLE materials ADD COLUMN IF NOT EXISTS omega_min_cm1 DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS omega_c_cm1 DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS host_low_cm1 DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS host_high_cm1 DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS rank_metric VARCHAR;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS d_liquid_cm2_s DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS d_hopping_cm2_s DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS cp_threshold DOUBLE;
-- Columns of the MD cell and engine (runs written before them: NULL).
ALTER TABLE materials ADD COLUMN IF NOT EXISTS phase VARCHAR;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS md_engine VARCHAR;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS npt_equilibrated BOOLEAN;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS density_g_cm3 DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS volume_A3 DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS cell_a_A DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS cell_b_A DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS cell_c_A DOUBLE;
-- pressure_gpa (ramanscreen.tasks.results.PRESSURE_GPA_DOC): the pressure the MD cell was set to
-- hold, 0 for a fixed cell at its built density. Runs written before schema version 3 left a
-- fixed cell null (or had no column): they are that 0 GPa case.
ALTER TABLE materials ADD COLUMN IF NOT EXISTS pressure_gpa DOUBLE;
UPDATE materials SET pressure_gpa = 0.0 WHERE pressure_gpa IS NULL;
-- The convergence and tie thresholds of [ranking] (runs written before them: NULL, the defaults apply).
ALTER TABLE materials ADD COLUMN IF NOT EXISTS converge_max_l2 DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS converge_max_cp_change DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS converge_max_D_rel_change DOUBLE;
ALTER TABLE materials ADD COLUMN IF NOT EXISTS tie_sigmas DOUBLE;

-- The committed data files of one table, as a list for read_parquet.
CREATE OR REPLACE MACRO committed_files(tbl) AS (
    SELECT list(getvariable('results_root') || '/' || tbl || '/campaign=' || campaign || '/material=' || material
                || '/run_id=' || run_id || '/' || write_id || '.parquet' ORDER BY campaign, material, run_id)
    FROM materials);

-- The committed files of a table added after runs were first written (tasks.results.OPTIONAL_TABLES):
-- runs written before it have no file, so only the files that exist are listed; none: [].
CREATE OR REPLACE MACRO existing_committed_files(tbl) AS COALESCE((
    SELECT list(f ORDER BY f) FROM (SELECT unnest(committed_files(tbl)) AS f)
    WHERE f IN (SELECT file FROM glob(getvariable('results_root') || '/' || tbl || '/*/*/*/*.parquet'))),
    []::VARCHAR[]);

SET VARIABLE spectra_files = committed_files('spectra');
CREATE OR REPLACE VIEW spectra AS
SELECT * FROM read_parquet(getvariable('spectra_files'),
    hive_partitioning = true, union_by_name = true,
    hive_types = {'campaign': VARCHAR, 'material': VARCHAR, 'run_id': VARCHAR});

SET VARIABLE transport_files = committed_files('transport');
CREATE OR REPLACE VIEW transport AS
SELECT * FROM read_parquet(getvariable('transport_files'),
    hive_partitioning = true, union_by_name = true,
    hive_types = {'campaign': VARCHAR, 'material': VARCHAR, 'run_id': VARCHAR});

SET VARIABLE descriptors_files = committed_files('descriptors');
CREATE OR REPLACE VIEW descriptors AS
SELECT * FROM read_parquet(getvariable('descriptors_files'),
    hive_partitioning = true, union_by_name = true,
    hive_types = {'campaign': VARCHAR, 'material': VARCHAR, 'run_id': VARCHAR});

SET VARIABLE ml_metrics_files = committed_files('ml_metrics');
CREATE OR REPLACE VIEW ml_metrics AS
SELECT * FROM read_parquet(getvariable('ml_metrics_files'),
    hive_partitioning = true, union_by_name = true,
    hive_types = {'campaign': VARCHAR, 'material': VARCHAR, 'run_id': VARCHAR});

SET VARIABLE msd_files = committed_files('msd');
CREATE OR REPLACE VIEW msd AS
SELECT * FROM read_parquet(getvariable('msd_files'),
    hive_partitioning = true, union_by_name = true,
    hive_types = {'campaign': VARCHAR, 'material': VARCHAR, 'run_id': VARCHAR});

SET VARIABLE vdos_files = committed_files('vdos');
CREATE OR REPLACE VIEW vdos AS
SELECT * FROM read_parquet(getvariable('vdos_files'),
    hive_partitioning = true, union_by_name = true,
    hive_types = {'campaign': VARCHAR, 'material': VARCHAR, 'run_id': VARCHAR});

-- A distilled potential against its teacher (columns: docs/results.md), one row per (run,
-- mobile species); runs whose MD used the calculator itself have none. Runs written before
-- this table have no mlff_validation file, so only the files that exist are read, and with
-- none at all the view is empty (with the key and flag columns the screening view reads).
SET VARIABLE mlff_validation_files = existing_committed_files('mlff_validation');
CREATE OR REPLACE VIEW mlff_validation AS
SELECT * FROM query(CASE WHEN len(getvariable('mlff_validation_files')) > 0
    THEN 'SELECT * FROM read_parquet(getvariable(''mlff_validation_files''), hive_partitioning = true,
          union_by_name = true, hive_types = {''campaign'': VARCHAR, ''material'': VARCHAR, ''run_id'': VARCHAR})'
    ELSE 'SELECT NULL::VARCHAR AS campaign, NULL::VARCHAR AS material, NULL::VARCHAR AS run_id,
          NULL::VARCHAR AS species, NULL::VARCHAR AS method, NULL::DOUBLE AS force_rmse_eV_A,
          NULL::BOOLEAN AS flagged WHERE false'
    END);

-- Convergence as data (ramanscreen.tasks.convergence; columns: docs/results.md): one row per (run, test,
-- fraction) -- test trajectory_length (the first 1/4, 1/2 and all of the run) or training_set (the
-- alpha model refitted on 1/4, 1/2 and all of N_T) -- and the spectra those rows compare, on the
-- full run's grid. Runs written before these tables have no files: only existing files are read,
-- and with none the views are empty (with the columns the ranking reads).
SET VARIABLE convergence_files = existing_committed_files('convergence');
CREATE OR REPLACE VIEW convergence AS
SELECT * FROM query(CASE WHEN len(getvariable('convergence_files')) > 0
    THEN 'SELECT * FROM read_parquet(getvariable(''convergence_files''), hive_partitioning = true,
          union_by_name = true, hive_types = {''campaign'': VARCHAR, ''material'': VARCHAR, ''run_id'': VARCHAR})'
    ELSE 'SELECT NULL::VARCHAR AS campaign, NULL::VARCHAR AS material, NULL::VARCHAR AS run_id,
          NULL::VARCHAR AS test, NULL::DOUBLE AS fraction, NULL::BIGINT AS n_alpha, NULL::DOUBLE AS duration_ps,
          NULL::BIGINT AS n_train, NULL::DOUBLE AS spectrum_l2_change, NULL::DOUBLE AS cp_fraction,
          NULL::DOUBLE AS cp_fraction_change, NULL::VARCHAR AS species, NULL::DOUBLE AS D_cm2_s,
          NULL::DOUBLE AS D_change_cm2_s, NULL::DOUBLE AS rmse_diag_A3, NULL::DOUBLE AS rmse_offdiag_A3,
          NULL::VARCHAR AS note WHERE false'
    END);

SET VARIABLE convergence_spectra_files = existing_committed_files('convergence_spectra');
CREATE OR REPLACE VIEW convergence_spectra AS
SELECT * FROM query(CASE WHEN len(getvariable('convergence_spectra_files')) > 0
    THEN 'SELECT * FROM read_parquet(getvariable(''convergence_spectra_files''), hive_partitioning = true,
          union_by_name = true, hive_types = {''campaign'': VARCHAR, ''material'': VARCHAR, ''run_id'': VARCHAR})'
    ELSE 'SELECT NULL::VARCHAR AS campaign, NULL::VARCHAR AS material, NULL::VARCHAR AS run_id,
          NULL::VARCHAR AS test, NULL::DOUBLE AS fraction, NULL::DOUBLE AS freq_cm1, NULL::DOUBLE AS intensity
          WHERE false'
    END);

-- Parity data (ramanscreen.tasks.parity; columns: docs/results.md). alpha_parity: one row per (run, test
-- frame of the alpha model, component), reference against predicted alpha (Fig. 2B diagonal, 2C
-- off-diagonal), every row naming its reference_method. force_parity: held-out force components of a
-- distilled potential against its teacher (Fig. S1), a bounded deterministic subsample per run. Runs
-- written before these tables (or, for force_parity, MD on the calculator itself) have none.
SET VARIABLE alpha_parity_files = existing_committed_files('alpha_parity');
CREATE OR REPLACE VIEW alpha_parity AS
SELECT * FROM query(CASE WHEN len(getvariable('alpha_parity_files')) > 0
    THEN 'SELECT * FROM read_parquet(getvariable(''alpha_parity_files''), hive_partitioning = true,
          union_by_name = true, hive_types = {''campaign'': VARCHAR, ''material'': VARCHAR, ''run_id'': VARCHAR})'
    ELSE 'SELECT NULL::VARCHAR AS campaign, NULL::VARCHAR AS material, NULL::VARCHAR AS run_id,
          NULL::BIGINT AS frame, NULL::BIGINT AS md_step, NULL::VARCHAR AS component, NULL::VARCHAR AS kind,
          NULL::DOUBLE AS alpha_reference_A3, NULL::DOUBLE AS alpha_predicted_A3,
          NULL::DOUBLE AS alpha_committee_std_A3, NULL::VARCHAR AS reference_method WHERE false'
    END);

SET VARIABLE force_parity_files = existing_committed_files('force_parity');
CREATE OR REPLACE VIEW force_parity AS
SELECT * FROM query(CASE WHEN len(getvariable('force_parity_files')) > 0
    THEN 'SELECT * FROM read_parquet(getvariable(''force_parity_files''), hive_partitioning = true,
          union_by_name = true, hive_types = {''campaign'': VARCHAR, ''material'': VARCHAR, ''run_id'': VARCHAR})'
    ELSE 'SELECT NULL::VARCHAR AS campaign, NULL::VARCHAR AS material, NULL::VARCHAR AS run_id,
          NULL::BIGINT AS frame, NULL::BIGINT AS atom, NULL::VARCHAR AS element, NULL::VARCHAR AS component,
          NULL::DOUBLE AS force_teacher_eV_A, NULL::DOUBLE AS force_distilled_eV_A,
          NULL::DOUBLE AS force_rmse_element_eV_A, NULL::BIGINT AS n_components_element,
          NULL::VARCHAR AS method, NULL::VARCHAR AS teacher WHERE false'
    END);

-- Fig. 2D as data (ramanscreen.tasks.convergence.compare_reference_spectrum; columns: docs/results.md):
-- one row per (run, frequency bin), the ML-predicted and the reference spectrum of the same consecutive
-- alpha frames ([reference] series_frames), divided by one number (the reference's area over the
-- cp_fraction window), with the L2 difference, both cp_fractions and the reference_method repeated on
-- every row. Runs with series_frames = 0, or written before this table, have none.
SET VARIABLE reference_spectrum_files = existing_committed_files('reference_spectrum');
CREATE OR REPLACE VIEW reference_spectrum AS
SELECT * FROM query(CASE WHEN len(getvariable('reference_spectrum_files')) > 0
    THEN 'SELECT * FROM read_parquet(getvariable(''reference_spectrum_files''), hive_partitioning = true,
          union_by_name = true, hive_types = {''campaign'': VARCHAR, ''material'': VARCHAR, ''run_id'': VARCHAR})'
    ELSE 'SELECT NULL::VARCHAR AS campaign, NULL::VARCHAR AS material, NULL::VARCHAR AS run_id,
          NULL::DOUBLE AS freq_cm1, NULL::DOUBLE AS intensity_ml, NULL::DOUBLE AS intensity_reference,
          NULL::DOUBLE AS l2_difference, NULL::DOUBLE AS l2_shape_difference, NULL::DOUBLE AS cp_fraction_ml,
          NULL::DOUBLE AS cp_fraction_reference, NULL::BIGINT AS n_frames, NULL::DOUBLE AS duration_ps,
          NULL::BIGINT AS first_frame, NULL::BIGINT AS frame_stride, NULL::VARCHAR AS reference_method,
          NULL::VARCHAR AS note WHERE false'
    END);

-- Per run: the block (sub-trajectory) standard error of cp_fraction, a column of descriptors
-- (ramanscreen.tasks.spectra.block_uncertainty); NULL for runs written before it, or whose blocks
-- were too short for the windows.
SET VARIABLE descriptors_have_block_err = (
    SELECT count(*) > 0 FROM information_schema.columns
    WHERE table_name = 'descriptors' AND column_name = 'cp_fraction_block_err');
CREATE OR REPLACE VIEW block_errors AS
SELECT * FROM query(CASE WHEN getvariable('descriptors_have_block_err')
    THEN 'SELECT campaign, material, run_id, cp_fraction_block_err FROM descriptors'
    ELSE 'SELECT NULL::VARCHAR AS campaign, NULL::VARCHAR AS material, NULL::VARCHAR AS run_id,
          NULL::DOUBLE AS cp_fraction_block_err WHERE false'
    END);

-- Per run: is its distilled potential flagged (NULL: the MD used the calculator itself)?
CREATE OR REPLACE VIEW mlff_flags AS
SELECT campaign, material, run_id, bool_or(flagged) AS mlff_flagged, max(force_rmse_eV_A) AS mlff_force_rmse_eV_A
FROM mlff_validation
GROUP BY campaign, material, run_id;

-- Central-peak fraction over windows you choose (for ad-hoc queries; the views below use each
-- run's own windows): the share of the Raman intensity integrated over [lo_cm1, top_cm1]
-- that lies in [lo_cm1, hi_cm1]. lo_cm1 > 0 keeps the omega = 0 bin (where the 1/omega
-- prefactor diverges) out of both integrals. Each bin is weighted by half the distance to its
-- neighbours inside [lo, top] (the trapezoid rule), so the grid need not be uniform. Also
-- computed from the committee band edges.
CREATE OR REPLACE MACRO central_peak_window(lo_cm1, hi_cm1, top_cm1) AS TABLE
WITH binned AS (
    SELECT campaign, material, run_id, freq_cm1, intensity, band_low, band_high,
           (COALESCE(lead(freq_cm1) OVER w, freq_cm1) - COALESCE(lag(freq_cm1) OVER w, freq_cm1)) / 2.0
               AS width_cm1
    FROM spectra
    WHERE freq_cm1 >= lo_cm1 AND freq_cm1 <= top_cm1
    WINDOW w AS (PARTITION BY campaign, material, run_id ORDER BY freq_cm1)
)
SELECT campaign, material, run_id,
       any_value(lo_cm1)::DOUBLE AS cp_lo_cm1,
       any_value(hi_cm1)::DOUBLE AS cp_hi_cm1,
       any_value(top_cm1)::DOUBLE AS cp_top_cm1,
       sum(intensity * width_cm1) FILTER (WHERE freq_cm1 <= hi_cm1) AS cp_integral,
       sum(intensity * width_cm1) AS total_integral,
       sum(intensity * width_cm1) FILTER (WHERE freq_cm1 <= hi_cm1)
           / NULLIF(sum(intensity * width_cm1), 0) AS cp_fraction,
       sum(band_low * width_cm1) FILTER (WHERE freq_cm1 <= hi_cm1)
           / NULLIF(sum(band_low * width_cm1), 0) AS cp_fraction_band_low,
       sum(band_high * width_cm1) FILTER (WHERE freq_cm1 <= hi_cm1)
           / NULLIF(sum(band_high * width_cm1), 0) AS cp_fraction_band_high,
       count(*) FILTER (WHERE freq_cm1 <= hi_cm1) AS cp_bins
FROM binned
GROUP BY campaign, material, run_id;

-- Every run's own windows: the central-peak fraction of a run uses the windows its campaign set
-- ([spectrum] omega_min_cm1, omega_c_cm1, host_window_cm1), recorded in its materials row, so
-- cp_fraction = share of [omega_min_cm1, host_high_cm1] that lies below omega_c_cm1 -- the same
-- windows as that run's descriptors (fraction_below_omega_c, to the edge-bin weighting). A run
-- without recorded windows (none of the writers leave them out) gets no cp_fraction.
CREATE OR REPLACE VIEW central_peak AS
WITH binned AS (
    SELECT s.campaign, s.material, s.run_id, s.freq_cm1, s.intensity, s.band_low, s.band_high,
           m.omega_min_cm1 AS lo_cm1, m.omega_c_cm1 AS hi_cm1, m.host_high_cm1 AS top_cm1,
           (COALESCE(lead(s.freq_cm1) OVER w, s.freq_cm1) - COALESCE(lag(s.freq_cm1) OVER w, s.freq_cm1)) / 2.0
               AS width_cm1
    FROM spectra s
    JOIN materials m ON s.campaign = m.campaign AND s.material = m.material AND s.run_id = m.run_id
    WHERE s.freq_cm1 >= m.omega_min_cm1 AND s.freq_cm1 <= m.host_high_cm1
    WINDOW w AS (PARTITION BY s.campaign, s.material, s.run_id ORDER BY s.freq_cm1)
)
SELECT campaign, material, run_id,
       any_value(lo_cm1)::DOUBLE AS cp_lo_cm1,
       any_value(hi_cm1)::DOUBLE AS cp_hi_cm1,
       any_value(top_cm1)::DOUBLE AS cp_top_cm1,
       sum(intensity * width_cm1) FILTER (WHERE freq_cm1 <= hi_cm1) AS cp_integral,
       sum(intensity * width_cm1) AS total_integral,
       sum(intensity * width_cm1) FILTER (WHERE freq_cm1 <= hi_cm1)
           / NULLIF(sum(intensity * width_cm1), 0) AS cp_fraction,
       sum(band_low * width_cm1) FILTER (WHERE freq_cm1 <= hi_cm1)
           / NULLIF(sum(band_low * width_cm1), 0) AS cp_fraction_band_low,
       sum(band_high * width_cm1) FILTER (WHERE freq_cm1 <= hi_cm1)
           / NULLIF(sum(band_high * width_cm1), 0) AS cp_fraction_band_high,
       count(*) FILTER (WHERE freq_cm1 <= hi_cm1) AS cp_bins
FROM binned
GROUP BY campaign, material, run_id;

-- The transport row of each run's mobile species: materials.mobile_species when given,
-- otherwise the species with the largest D.
CREATE OR REPLACE VIEW mobile_transport AS
SELECT t.*, m.mobile_species IS NOT NULL AS mobile_species_given
FROM transport t
JOIN materials m ON t.campaign = m.campaign AND t.material = m.material AND t.run_id = m.run_id
QUALIFY row_number() OVER (
    PARTITION BY t.campaign, t.material, t.run_id
    ORDER BY (t.species = m.mobile_species) DESC NULLS LAST, t.D_cm2_s DESC NULLS LAST) = 1;

-- One row per committed run: what the ranking and the plots read.
CREATE OR REPLACE VIEW screening AS
SELECT m.campaign, m.material, m.run_id, m.formula, m.temperature_k, m.n_atoms,
       t.species AS mobile_species, t.D_cm2_s, t.D_err_cm2_s, t.sigma_S_cm, t.alpha2_peak, t.vdos0,
       c.cp_fraction, c.cp_fraction_band_low, c.cp_fraction_band_high, c.cp_lo_cm1, c.cp_hi_cm1, c.cp_top_cm1,
       b.cp_fraction_block_err,
       ml.r2_diag, ml.r2_offdiag, ml.rmse_diag_A3, ml.rmse_offdiag_A3,
       m.mlff, f.mlff_flagged, f.mlff_force_rmse_eV_A, m.reference_method, m.n_train, m.md_production_ps,
       m.phase, m.md_engine, m.npt_equilibrated, m.density_g_cm3, m.pressure_gpa,
       m.omega_min_cm1, m.omega_c_cm1, m.host_low_cm1, m.host_high_cm1,
       m.rank_metric, m.d_liquid_cm2_s, m.d_hopping_cm2_s, m.cp_threshold,
       m.converge_max_l2, m.converge_max_cp_change, m.converge_max_D_rel_change, m.tie_sigmas,
       m.code_version, m.created_at, m.write_id, m.schema_version
FROM materials m
LEFT JOIN mobile_transport t ON t.campaign = m.campaign AND t.material = m.material AND t.run_id = m.run_id
LEFT JOIN central_peak c ON c.campaign = m.campaign AND c.material = m.material AND c.run_id = m.run_id
LEFT JOIN ml_metrics ml ON ml.campaign = m.campaign AND ml.material = m.material AND ml.run_id = m.run_id
LEFT JOIN mlff_flags f ON f.campaign = m.campaign AND f.material = m.material AND f.run_id = m.run_id
LEFT JOIN block_errors b ON b.campaign = m.campaign AND b.material = m.material AND b.run_id = m.run_id;

-- Imported experimental spectra (`ramanscreen experiment import FILE --results-root R`): one file
-- per spectrum, experimental_spectra/material=<m>/campaign=<c or _>/<spectrum_id>.parquet, each
-- replaced by one atomic rename, every row carrying the spectrum's metadata. A temporary table
-- (a snapshot, like materials); empty, with the same columns, when nothing was imported.
-- campaign is NULL for a spectrum imported without --campaign: join it to every campaign's run,
--   ... JOIN spectra s ON s.material = e.material AND (e.campaign IS NULL OR e.campaign = s.campaign)
SET VARIABLE experimental_spectra_files = (
    SELECT list(file ORDER BY file)
    FROM glob(getvariable('results_root') || '/experimental_spectra/material=*/campaign=*/*.parquet'));
SET VARIABLE experimental_spectra_query = CASE
    WHEN len(COALESCE(getvariable('experimental_spectra_files'), [])) = 0 THEN
        'SELECT NULL::VARCHAR AS campaign, NULL::VARCHAR AS material, NULL::VARCHAR AS spectrum_id,
                NULL::DOUBLE AS freq_cm1, NULL::DOUBLE AS intensity, NULL::VARCHAR AS formula,
                NULL::DOUBLE AS temperature_k, NULL::DOUBLE AS pressure_gpa, NULL::DOUBLE AS sigma_S_cm,
                NULL::VARCHAR AS source, NULL::VARCHAR AS file, NULL::VARCHAR AS file_sha256,
                NULL::VARCHAR AS format, NULL::VARCHAR AS baseline, NULL::VARCHAR AS normalisation,
                NULL::TIMESTAMPTZ AS imported_at, NULL::VARCHAR AS write_id, NULL::INTEGER AS schema_version
         WHERE false'
    ELSE
        'SELECT campaign, material, spectrum_id, freq_cm1, intensity, formula, temperature_k, pressure_gpa,
                sigma_S_cm, source, file, file_sha256, format, baseline, normalisation, imported_at,
                write_id, schema_version
         FROM read_parquet(getvariable(''experimental_spectra_files''), union_by_name = true, hive_partitioning = false)'
    END;
CREATE OR REPLACE TEMP TABLE experimental_spectra AS
SELECT * FROM query(getvariable('experimental_spectra_query'));

-- One row per imported experimental spectrum with a measured conductivity: training data for
-- `ramanscreen surrogate fit R` and `ramanscreen peaks regress R` (measured values, not MD).
CREATE OR REPLACE VIEW experimental_conductivity AS
SELECT campaign, material, spectrum_id, any_value(formula) AS formula,
       any_value(temperature_k) AS temperature_k, any_value(pressure_gpa) AS pressure_gpa,
       any_value(sigma_S_cm) AS sigma_S_cm, any_value(source) AS source, any_value(file) AS file,
       count(*) AS n_bins, min(freq_cm1) AS freq_min_cm1, max(freq_cm1) AS freq_max_cm1
FROM experimental_spectra
WHERE sigma_S_cm IS NOT NULL
GROUP BY campaign, material, spectrum_id;
