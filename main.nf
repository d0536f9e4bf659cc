#!/usr/bin/env nextflow
/*
 * virnucpro-extract: FastESM2_650 + DNABERT-S merged training features for VirNucPro.
 * Thin entry point: --help, the head's checks, the one workflow, the last line.
 */

include { VIRNUCPRO_EXTRACT                                 } from './workflows/virnucpro_extract'
include { MAKE_TEST_INPUTS                                  } from './modules/local/make_test_inputs'
include { initialisePipeline; completionMessage; helpMessage } from './subworkflows/local/utils_virnucpro_extract'


workflow {
    main:
    if (params.help) {
        log.info(helpMessage("${projectDir}/nextflow_schema.json", workflow.manifest))
        return
    }
    def start = initialisePipeline()
    if (start.make_test_inputs) {
        // -profile test alone: it builds its own tiny data/ folder and model
        MAKE_TEST_INPUTS()
        ch_inputs = MAKE_TEST_INPUTS.out.data.map { data -> files("${data}/*/*", type: 'file').collect { f -> [f, f.toString()] } }
        ch_esm_model = MAKE_TEST_INPUTS.out.esm_model
        ch_data_dir = MAKE_TEST_INPUTS.out.data.map { data -> data.toString() }
    }
    else {
        ch_inputs = channel.value(start.inputs)
        ch_esm_model = channel.value(start.esm_model)
        ch_data_dir = channel.value('')
    }
    VIRNUCPRO_EXTRACT(ch_inputs, ch_esm_model, channel.value(start.dnabert_model), ch_data_dir, start.source)

    def run = workflow
    def outdir = params.outdir
    workflow.onComplete {
        def line = completionMessage(run, outdir)
        if (line) {
            log.info(line)
        }
    }
    workflow.onError {
        def line = completionMessage(run, outdir)
        if (line) {
            log.info(line)
        }
    }
}
