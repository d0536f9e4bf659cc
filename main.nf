#!/usr/bin/env nextflow
/*
 * virnucpro-extract: FastESM2_650 + DNABERT-S merged training features for VirNucPro.
 * Thin entry point: help, then the one workflow.
 */

include { VIRNUCPRO_EXTRACT } from './workflows/virnucpro_extract'
include { helpMessage       } from './workflows/help'

workflow {
    if (params.help) {
        log.info helpMessage("${projectDir}/nextflow_schema.json", workflow.manifest)
        return
    }
    VIRNUCPRO_EXTRACT()
}
